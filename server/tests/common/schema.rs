//! Validates values against schemas of an OpenAPI document with a JSON Schema validator
//! (draft 2020-12, formats checked), the whole document the root resource so `$ref`s
//! resolve.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One document and the validators compiled from it, by JSON pointer.
pub struct Schemas {
    pub document: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Schemas {
    pub fn new(document: Value) -> Self {
        Self {
            document,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The validator of the schema at `pointer` (`/components/schemas/Envelope`).
    pub fn validator(&self, pointer: &str) -> Arc<jsonschema::Validator> {
        assert!(
            self.document.pointer(pointer).is_some(),
            "the document has nothing at {pointer}"
        );
        let mut validators = self.validators.lock().unwrap();
        validators
            .entry(pointer.to_owned())
            .or_insert_with(|| {
                let mut root = self.document.clone();
                // A URI fragment: braces of path templates are percent-encoded.
                let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
                root["$ref"] = Value::String(format!("#{fragment}"));
                Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .should_validate_formats(true)
                        .build(&root)
                        .unwrap_or_else(|error| panic!("{pointer}: not a schema: {error}")),
                )
            })
            .clone()
    }

    /// What is wrong with `instance` against the schema at `pointer` (empty: valid).
    pub fn errors(&self, pointer: &str, instance: &Value) -> Vec<String> {
        self.validator(pointer)
            .iter_errors(instance)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect()
    }

    #[track_caller]
    pub fn assert_valid(&self, pointer: &str, instance: &Value, what: &str) {
        let errors = self.errors(pointer, instance);
        assert!(
            errors.is_empty(),
            "{what} does not match the document ({pointer}): {errors:#?}\n{instance:#}"
        );
    }

    #[track_caller]
    pub fn assert_invalid(&self, pointer: &str, instance: &Value, what: &str) {
        assert!(
            !self.errors(pointer, instance).is_empty(),
            "{what} matches the document ({pointer}), which should refuse it"
        );
    }
}

/// The JSON pointer of an operation (`/paths/~1v1~1login/post`).
pub fn operation_pointer(method: &str, template: &str) -> String {
    format!(
        "/paths/{}/{}",
        template.replace('~', "~0").replace('/', "~1"),
        method.to_lowercase()
    )
}

/// The pointer of an operation's JSON request body schema.
pub fn request_schema(method: &str, template: &str) -> String {
    format!(
        "{}/requestBody/content/application~1json/schema",
        operation_pointer(method, template)
    )
}

/// The pointer of the schema of a query or path parameter of an operation.
pub fn parameter_schema(document: &Value, method: &str, template: &str, name: &str) -> String {
    let operation = operation_pointer(method, template);
    let index = document
        .pointer(&format!("{operation}/parameters"))
        .and_then(Value::as_array)
        .and_then(|parameters| parameters.iter().position(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{method} {template} has no parameter {name}"));
    format!("{operation}/parameters/{index}/schema")
}

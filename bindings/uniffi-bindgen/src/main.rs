//! `uniffi-bindgen generate --library target/debug/libcourier_ffi.so --language kotlin ...`:
//! uniffi's own command line, built from the same uniffi version as `courier-ffi`, plus one
//! change to the Kotlin it writes (see [`attach_callback_threads`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The line of uniffi's Kotlin (templates/Async.kt, uniffi 0.32) that declares the callback
/// through which the library wakes every suspended call.
const CONTINUATION_CALLBACK: &str = "internal object uniffiRustFutureContinuationCallbackImpl: UniffiRustFutureContinuationCallback {";

/// Inserted into that object. JNA attaches the calling native thread to the JVM for each
/// callback and detaches it afterwards, creating a new `java.lang.Thread` every time, a
/// cost once per call of every async method (docs/benchmarks.md has what it cost Kotlin's
/// 9-device send). With this initializer a library thread is attached at its first
/// callback and stays attached (as a daemon, so it never keeps the JVM alive) until it
/// ends, when JNA detaches it.
const KEEP_ATTACHED: &str = "
    // Added by bindings/uniffi-bindgen: the library's threads stay attached to the JVM
    // between callbacks instead of being attached and detached at every call.
    init {
        com.sun.jna.Native.setCallbackThreadInitializer(
            this,
            com.sun.jna.CallbackThreadInitializer(true, false, \"courier-callback\"),
        )
    }
";

// A command-line tool: its errors go to stderr.
#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().collect();
    // Exits the process itself on a failure.
    uniffi::uniffi_bindgen_main();
    if !generates_kotlin(&arguments) {
        return ExitCode::SUCCESS;
    }
    // Library mode (the only one the scripts use) needs --out-dir; without it the Kotlin
    // would go out unpatched, so that is refused rather than passed over.
    let Some(out_dir) = option_value(&arguments, "--out-dir", "-o") else {
        eprintln!(
            "uniffi-bindgen: generating Kotlin needs --out-dir (the sources get patched there)"
        );
        return ExitCode::FAILURE;
    };
    match patch_kotlin_sources(Path::new(&out_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("uniffi-bindgen: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the command line is `generate` with Kotlin among its languages.
fn generates_kotlin(arguments: &[String]) -> bool {
    arguments
        .get(1)
        .is_some_and(|command| command == "generate")
        && option_values(arguments, "--language", "-l").any(|language| language == "kotlin")
}

fn option_value(arguments: &[String], long: &str, short: &str) -> Option<String> {
    option_values(arguments, long, short).last()
}

/// Every value given to an option, as `--long value`, `--long=value` or `-s value`.
fn option_values<'a>(
    arguments: &'a [String],
    long: &'a str,
    short: &'a str,
) -> impl Iterator<Item = String> + 'a {
    arguments
        .iter()
        .enumerate()
        .filter_map(move |(index, argument)| {
            if argument == long || argument == short {
                arguments.get(index + 1).cloned()
            } else {
                argument
                    .strip_prefix(long)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::to_owned)
            }
        })
}

/// Applies [`attach_callback_threads`] to the Kotlin files under `out_dir`; an error if no
/// file declares the continuation callback (a uniffi upgrade changed its template).
fn patch_kotlin_sources(out_dir: &Path) -> Result<(), String> {
    let mut patched = 0;
    for file in kotlin_files(out_dir)? {
        let source = std::fs::read_to_string(&file)
            .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        if let Some(changed) = attach_callback_threads(&source) {
            std::fs::write(&file, changed)
                .map_err(|error| format!("cannot write {}: {error}", file.display()))?;
            patched += 1;
        }
    }
    if patched == 0 {
        return Err(format!(
            "no Kotlin file under {} declares uniffi's continuation callback; \
             update CONTINUATION_CALLBACK in bindings/uniffi-bindgen for this uniffi version",
            out_dir.display()
        ));
    }
    Ok(())
}

fn kotlin_files(directory: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(directory)
        .map_err(|error| format!("cannot list {}: {error}", directory.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|error| format!("cannot list {}: {error}", directory.display()))?
            .path();
        if path.is_dir() {
            files.extend(kotlin_files(&path)?);
        } else if path.extension().is_some_and(|extension| extension == "kt") {
            files.push(path);
        }
    }
    Ok(files)
}

/// The source with [`KEEP_ATTACHED`] inside the continuation callback object, or `None`
/// when the source declares no such object. Applying it twice changes nothing more.
fn attach_callback_threads(source: &str) -> Option<String> {
    let start = source.find(CONTINUATION_CALLBACK)?;
    let end = start + CONTINUATION_CALLBACK.len();
    if source[end..].starts_with(KEEP_ATTACHED) {
        return Some(source.to_owned());
    }
    Some(format!(
        "{}{KEEP_ATTACHED}{}",
        &source[..end],
        &source[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = "package dev.courier\n\ninternal object uniffiRustFutureContinuationCallbackImpl: UniffiRustFutureContinuationCallback {\n    override fun callback(data: Long, pollResult: Byte) {}\n}\n";

    #[test]
    fn the_initializer_goes_inside_the_continuation_callback_once() {
        let patched = attach_callback_threads(GENERATED).expect("the object is there");
        let object = patched
            .find(CONTINUATION_CALLBACK)
            .expect("declaration kept");
        let init = patched
            .find("setCallbackThreadInitializer")
            .expect("inserted");
        let callback = patched.find("override fun callback").expect("body kept");
        assert!(object < init && init < callback, "{patched}");
        assert_eq!(
            attach_callback_threads(&patched).as_deref(),
            Some(patched.as_str())
        );
        assert_eq!(patched.matches("setCallbackThreadInitializer").count(), 1);
    }

    #[test]
    fn a_source_without_the_callback_is_left_alone() {
        assert_eq!(attach_callback_threads("package dev.courier\n"), None);
    }

    #[test]
    fn a_directory_without_the_callback_is_an_error() {
        let directory =
            std::env::temp_dir().join(format!("uniffi-bindgen-test-{}", std::process::id()));
        std::fs::create_dir_all(directory.join("dev")).expect("scratch directory");
        std::fs::write(directory.join("dev/other.kt"), "package dev\n").expect("write");
        let result = patch_kotlin_sources(&directory);
        std::fs::remove_dir_all(&directory).expect("clean up");
        assert!(
            result
                .expect_err("nothing to patch")
                .contains("continuation callback")
        );
    }

    #[test]
    fn options_are_read_in_every_spelling() {
        let arguments: Vec<String> = [
            "uniffi-bindgen",
            "generate",
            "-l",
            "python",
            "--language=kotlin",
            "--out-dir",
            "out",
        ]
        .map(str::to_owned)
        .into();
        assert!(generates_kotlin(&arguments));
        assert_eq!(
            option_value(&arguments, "--out-dir", "-o").as_deref(),
            Some("out")
        );
        let python_only: Vec<String> = [
            "uniffi-bindgen",
            "generate",
            "--language",
            "python",
            "-o",
            "out",
        ]
        .map(str::to_owned)
        .into();
        assert!(!generates_kotlin(&python_only));
    }
}

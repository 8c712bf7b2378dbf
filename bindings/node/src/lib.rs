//! Courier's Node-API addon: `courier_sdk::app` for Node.js and Electron's main process.
//!
//! A shell of conversions (the bridging layer is not API): [`client`] holds the
//! `CourierClient` and `ReceiveHandle` classes, [`types`] the records, [`error`] the
//! error object, [`listener`] the JavaScript callbacks as the SDK's `EventListener`.
//! The TypeScript declarations (`index.d.ts`) are generated from these items.

mod client;
mod error;
mod listener;
mod types;

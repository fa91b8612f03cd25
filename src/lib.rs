//! agentdeck: an operator cockpit and control core for AI agents in production.
//!
//! The layers, bottom up: [`model`] (domain types), [`store`] (Postgres / SQLite),
//! [`runtime`] (sandboxes), [`harness`] (the agent inside a sandbox), [`gateway`] (the LLM
//! gateway), [`core`] (the one API every front end calls, and the worker), and the front ends:
//! [`api`] (REST), [`tui`] (the cockpit) and the CLI in `main.rs`; [`console`] gives the
//! operator's terminal to a shell in a sandbox, for the cockpit and the CLI.

pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod console;
pub mod core;
pub mod deck;
pub mod gateway;
pub mod harness;
pub mod model;
pub mod net;
pub mod runtime;
pub mod sanitize;
pub mod shell_socket;
pub mod store;
pub mod telemetry;
pub mod tui;

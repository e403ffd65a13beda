//! Tests of the state machine through its public API: named behaviours, then properties over
//! arbitrary input sequences.

mod batch;
mod check;
mod handover;
mod harness;
mod history;
mod properties;
mod work;

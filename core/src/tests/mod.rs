//! Tests of the state machine through its public API: named behaviours, then properties over
//! arbitrary input sequences.

mod behaviour;
mod harness;
mod history;
mod properties;
mod resign;
mod work;

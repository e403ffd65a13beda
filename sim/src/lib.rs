//! The leadership core in virtual time: what needs [`leadership_core`] and nothing else.
//!
//! - [`sim`]: the deterministic multi-process simulator (`--bin simulate`).
//! - [`model`]: the model checker, every interleaving of a small fleet of real cores
//!   (`--bin model-check`).
//! - [`table`]: the reference in-memory table with PostgreSQL's semantics.
//! - [`belief`]: who believes it leads and the fencing order, as both modelled drivers keep
//!   them.
//! - [`check`]: the check as a modelled driver sends it, from the core's command to the
//!   table's call (one way for the simulators and the model check).
//! - [`check_variants`]: other texts of the check (the one before issue 14, the candidate not
//!   chosen, a broken one), for the benchmark and the tests to compare with.
//! - [`violation`]: the one broken rule the simulator, the shard simulator and the model check
//!   report.
//! - [`fuzz`]: the bodies of the core's fuzz targets, shared by `fuzz/` and the replay tests.

pub mod belief;
pub mod check;
pub mod check_variants;
pub mod fuzz;
pub mod model;
pub mod safeguards;
pub mod sim;
pub mod table;
pub mod violation;

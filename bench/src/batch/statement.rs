//! The batched check as the driver sends it, and one variant of it for comparison only
//! (never sent by the drivers): what the server's time per row would be without the two
//! costs `batch-load` finds in it.

use leadership_core::sql::{Statements, Table};

/// Which text of the batched check, and which session settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Variant {
    /// `Statements::check_batch`, on the server's settings: what the driver sends.
    AsIs,
    /// The same text, with `SET jit = off` on the connection.
    JitOff,
    /// `won_by` read by a join instead of a correlated `EXISTS` per won row (which scans the
    /// batch's `seen` and `req` once per row: quadratic in the batch), `jit = off` and
    /// `random_page_cost = 1.1` (the rows of a batch looked up by the index rather than by a
    /// scan of the whole table). Not the driver's: for comparison only.
    Fixed,
}

impl Variant {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::AsIs => "as sent (server defaults)",
            Variant::JitOff => "as sent, jit off",
            Variant::Fixed => "won_by by a join, jit off, random_page_cost 1.1 (not the driver's)",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            Variant::AsIs => "as sent",
            Variant::JitOff => "jit off",
            Variant::Fixed => "fixed",
        }
    }

    /// The statement's text.
    pub(crate) fn text(self) -> String {
        let sent = Statements::new(&Table::default()).check_batch;
        match self {
            Variant::AsIs | Variant::JitOff => sent,
            Variant::Fixed => {
                let text = sent.replace(EXISTS, JOIN);
                assert_ne!(
                    text, sent,
                    "the batch's won_by is no longer the one replaced"
                );
                text
            }
        }
    }

    /// What the connection sets first.
    pub(crate) fn session(self) -> &'static str {
        match self {
            Variant::AsIs => "",
            Variant::JitOff => "SET jit = off",
            Variant::Fixed => "SET jit = off; SET random_page_cost = 1.1",
        }
    }
}

/// `won`'s test of a renew in `CHECK_BATCH`, as rendered: a correlated subquery per won row.
const EXISTS: &str = "CASE WHEN EXISTS (SELECT FROM seen JOIN req ON seen.name = req.name
                             WHERE seen.name = updated.name AND seen.holder = $2
                               AND seen.version = req.renew)
           THEN 'renewed' ELSE 'took_over' END AS won_by
    FROM updated";

/// The same test by a join (names are unique in `req` and in `seen`).
const JOIN: &str = "CASE WHEN seen.holder = $2 AND seen.version = req.renew
           THEN 'renewed' ELSE 'took_over' END AS won_by
    FROM updated JOIN req ON req.name = updated.name
    LEFT JOIN seen ON seen.name = updated.name";

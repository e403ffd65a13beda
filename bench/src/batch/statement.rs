//! The batched check as the driver sent it when `batch-load` was first run, and as it sends
//! it since (`won_by` by a join, JIT off on the driver's connections), for comparison.

use leadership_core::sql::{Statements, Table};

/// Which text of the batched check, and which session settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Variant {
    /// The text before `won_by` was read by a join (a correlated `EXISTS` per won row, which
    /// scans the batch's `seen` and `req` once per row: quadratic in the batch), on the
    /// server's settings: what the driver sent when these figures were first taken.
    AsIs,
    /// The same text, with `SET jit = off` on the connection.
    JitOff,
    /// `Statements::check_batch` as the driver sends it now (`won_by` by a join), `jit = off`
    /// as the driver's connections ask, and `random_page_cost = 1.1` (the rows of a batch
    /// looked up by the index rather than by a scan of the whole table), which is the server's
    /// setting, not the driver's.
    Fixed,
}

impl Variant {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::AsIs => "as first sent (won_by by EXISTS, server defaults)",
            Variant::JitOff => "as first sent, jit off",
            Variant::Fixed => "as sent now (won_by by a join, jit off), random_page_cost 1.1",
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
            Variant::AsIs | Variant::JitOff => {
                let text = sent.replace(JOIN, EXISTS);
                assert_ne!(text, sent, "the batch's won_by is no longer the join");
                text
            }
            Variant::Fixed => sent,
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

/// `won`'s test of a renew in `CHECK_BATCH` as it was first rendered: a correlated subquery
/// per won row.
const EXISTS: &str = "CASE WHEN EXISTS (SELECT FROM seen JOIN req ON seen.name = req.name
                             WHERE seen.name = updated.name AND seen.holder = $2
                               AND seen.version = req.renew)
           THEN 'renewed' ELSE 'took_over' END AS won_by
    FROM updated";

/// The same test by a join (names are unique in `req` and in `seen`), as `CHECK_BATCH` has it
/// now.
const JOIN: &str = "CASE WHEN seen.holder = $2 AND seen.version = req.renew
           THEN 'renewed' ELSE 'took_over' END AS won_by
    FROM updated JOIN req ON req.name = updated.name
    LEFT JOIN seen ON seen.name = updated.name";

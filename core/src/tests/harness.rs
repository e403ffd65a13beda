//! A hand-driven process: the test plays the driver and the database, reply by reply.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::{Checked, Command, Config, DbTime, Flag, Input, Instant, Row, WonBy};

pub(crate) const PROCESS: &str = "me";
pub(crate) const OTHER: &str = "other";

/// A row as the test writes it.
#[derive(Clone, Debug)]
pub(crate) struct TestRow {
    pub holder: Option<String>,
    pub version: Option<i64>,
    pub timestamp: Option<DbTime>,
}

pub(crate) fn row(holder: &str, version: i64, timestamp: DbTime) -> TestRow {
    TestRow {
        holder: Some(holder.into()),
        version: Some(version),
        timestamp: Some(timestamp),
    }
}

/// The database's time `ms` milliseconds after an arbitrary start.
pub(crate) fn db(ms: i64) -> DbTime {
    DbTime::from_unix_micros(1_700_000_000_000_000 + ms * 1000)
}

/// The check a leader holding `version` sends to renew it, exactly as the core sends it (the
/// next version is the floor; no insert, since the leader saw the row; the term of
/// [`Harness::leader`], won at version 0, continues).
pub(crate) fn renew_check(version: i64) -> Command {
    Command::Check {
        renew: Some(version),
        floor: version + 1,
        may_take: true,
        may_insert: false,
        continues: Some(0),
        expect: None,
    }
}

pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub(crate) struct Harness {
    pub flag: Flag,
    pub now: Instant,
}

impl Harness {
    /// Interval 2 s, timeout 500 ms, margin 100 ms, retry 200 ms, renew 1 s; no jitter so
    /// that tests can name exact instants.
    pub fn new() -> Harness {
        Harness::with(
            Config::builder("flag", PROCESS)
                .interval(ms(2000))
                .timeout(ms(500))
                .jitter(0.0),
        )
    }

    pub fn with(builder: crate::ConfigBuilder) -> Harness {
        let now = Instant::from_nanos(1_000_000_000);
        Harness {
            flag: Flag::new(builder.build().unwrap(), 7, now),
            now,
        }
    }

    pub fn commands(&mut self) -> Vec<Command> {
        core::iter::from_fn(|| self.flag.poll_command()).collect()
    }

    pub fn at(&mut self, after: Duration) -> Instant {
        self.now = self.now + after;
        self.now
    }

    pub fn input(&mut self, input: Input<'_>) -> Vec<Command> {
        self.flag.handle_input(self.now, input).unwrap();
        self.commands()
    }

    pub fn checked(&mut self, won: bool, row: Option<TestRow>, now: DbTime) -> Vec<Command> {
        let row = row.as_ref().map(|r| Row {
            holder: r.holder.as_deref(),
            version: r.version,
            timestamp: r.timestamp,
        });
        // A won insert is told as the statement tells it (`won_by`); other wins are new terms
        // or renewals that the core tells apart itself, unless a test says how.
        let won_by = (won && row.and_then(|r| r.version) == Some(0)).then_some(WonBy::Created);
        self.input(Input::Checked(Checked {
            won,
            won_by,
            row,
            now,
            server: None,
        }))
    }

    /// A check reply that says how it won, and which server ran it.
    pub fn checked_on(
        &mut self,
        won_by: Option<WonBy>,
        row: Option<TestRow>,
        now: DbTime,
        server: Option<crate::Server>,
    ) -> Vec<Command> {
        let row = row.as_ref().map(|r| Row {
            holder: r.holder.as_deref(),
            version: r.version,
            timestamp: r.timestamp,
        });
        self.input(Input::Checked(Checked {
            won: won_by.is_some(),
            won_by,
            row,
            now,
            server,
        }))
    }

    /// Moves the clock to the next wake-up and fires it.
    pub fn wake(&mut self) -> Vec<Command> {
        let at = self.flag.poll_timeout().expect("a wake-up is scheduled");
        assert!(
            at >= self.now,
            "poll_timeout {at} is before now {}",
            self.now
        );
        self.now = at;
        self.flag.handle_timeout(at);
        self.commands()
    }

    /// Start as leader: the first check inserts the row at version 0.
    pub fn leader() -> Harness {
        let mut h = Harness::new();
        assert_eq!(
            h.commands(),
            [Command::Check {
                renew: None,
                floor: 0,
                may_take: true,
                may_insert: true,
                continues: None,
                expect: None,
            }]
        );
        let c = h.checked(true, Some(row(PROCESS, 0, db(0))), db(0));
        assert!(matches!(c[..], [Command::Raise(_)]), "{c:?}");
        h
    }
}

/// The check a follower sends to renew a row of its own that is not a live lease of this
/// life (a lapsed lease, an adopted one): like [`renew_check`], but a win starts a new term.
pub(crate) fn retake_check(version: i64) -> Command {
    match renew_check(version) {
        Command::Check {
            renew,
            floor,
            may_take,
            may_insert,
            ..
        } => Command::Check {
            renew,
            floor,
            may_take,
            may_insert,
            continues: None,
            expect: None,
        },
        other => other,
    }
}

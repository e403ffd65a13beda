//! The one kind of error the core returns: the driver broke the contract. Database failures
//! are not errors of the API; they are [`Input::Failed`](crate::Input::Failed).

use crate::input::InputKind;

/// The driver fed an input the core cannot accept. The core's state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// A reply arrived while nothing was pending.
    #[error("a {got:?} reply arrived but no statement or precheck is pending")]
    NothingPending {
        /// The reply's kind.
        got: InputKind,
    },
    /// A reply of the wrong kind for what is pending.
    #[error("a {got:?} reply arrived while the core waits for {expected}")]
    WrongReply {
        /// What the core waits for.
        expected: &'static str,
        /// The reply's kind.
        got: InputKind,
    },
    /// A check reply claims a win but carries no row version.
    #[error("a won check reply has no row version")]
    WonWithoutVersion,
    /// A check reply claims a win on another server than the one the check expected: the
    /// statement changes nothing there ([`sql::CHECK`](crate::sql::CHECK)), so the driver ran
    /// another statement, or decoded the reply wrongly.
    #[error("a won check reply names another server than the one the check expected")]
    WonOnAnotherServer,
    /// Commands were not drained between inputs.
    #[error("commands were not drained: call poll_command until it returns None after each input")]
    NotDrained,
}

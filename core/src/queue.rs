//! A fixed-capacity queue of commands: the core allocates nothing per input.

use crate::command::Command;

const CAPACITY: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Queue {
    items: [Option<Command>; CAPACITY],
    head: usize,
    len: usize,
}

impl Queue {
    pub(crate) fn new() -> Queue {
        Queue {
            items: [None; CAPACITY],
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends. The drain limit checked before every input keeps this from filling; were it
    /// ever full, the command would be dropped rather than panic in production.
    pub(crate) fn push(&mut self, command: Command) {
        debug_assert!(self.len < CAPACITY, "command queue overflow");
        if self.len < CAPACITY {
            self.items[(self.head + self.len) % CAPACITY] = Some(command);
            self.len += 1;
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Command> {
        if self.len == 0 {
            return None;
        }
        let command = self.items[self.head].take();
        self.head = (self.head + 1) % CAPACITY;
        self.len -= 1;
        command
    }
}

//! What the workloads record: one clock for the whole run, and the operations on the
//! registers as they were invoked and completed.

use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;

use crate::linearizability;
use crate::linearizability::Input;
use crate::linearizability::Operation;
use crate::linearizability::Output;
use crate::linearizability::Value;

/// Microseconds since the run started, from one monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock that reads 0 now.
    pub fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    /// Microseconds since [`Clock::start`].
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Seconds, for reports.
pub fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// What a register operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Call {
    /// Linearizable Range of the key.
    Get,
    /// Put of a unique value.
    Put { value: Value },
    /// Txn: if value == expected then put new.
    Cas { expected: Value, new: Value },
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    /// Answered: the value read (0: no key), or whether the CAS swapped (a put: `true`).
    Ok {
        #[serde(rename = "read")]
        value: Option<Value>,
        swapped: Option<bool>,
    },
    /// Certainly not applied.
    Fail { error: String },
    /// May or may not have been applied.
    Unknown { error: String },
}

/// One operation on a register key (a line of `history.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterOp {
    /// The client that issued it.
    pub client: usize,
    /// The master (index) it was sent to.
    pub master: usize,
    /// The key: `epoch * keys + k` for register k of that epoch (see [`crate::registers`]).
    pub key: usize,
    /// What it asked.
    #[serde(flatten)]
    pub call: Call,
    /// When it was invoked (µs since the run started).
    pub invoked: u64,
    /// When its answer (or failure) came back.
    pub completed: u64,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl RegisterOp {
    /// The operation as the checker sees it; `None` for one that certainly did not happen.
    pub fn to_operation(&self) -> Option<Operation> {
        let input = match self.call {
            Call::Get => Input::Read,
            Call::Put { value } => Input::Write(value),
            Call::Cas { expected, new } => Input::Cas { expected, new },
        };
        let ret = match (&self.outcome, self.call) {
            (Outcome::Fail { .. }, _) => return None,
            (Outcome::Unknown { .. }, _) => None,
            (Outcome::Ok { value, .. }, Call::Get) => Some(Output::Read(value.unwrap_or(0))),
            (Outcome::Ok { .. }, Call::Put { .. }) => Some(Output::Write),
            (Outcome::Ok { swapped, .. }, Call::Cas { .. }) => Some(Output::Cas(swapped.unwrap_or(false))),
        };
        Some(Operation { client: self.client, input, call: self.invoked, ret: ret.map(|out| (self.completed, out)) })
    }

    /// Whether this was a write (put or CAS) that was acknowledged (for the write gap).
    pub fn acknowledged_write(&self) -> bool {
        match (&self.outcome, self.call) {
            (Outcome::Ok { .. }, Call::Put { .. }) => true,
            (Outcome::Ok { swapped, .. }, Call::Cas { .. }) => *swapped == Some(true),
            _ => false,
        }
    }
}

/// Per-key checker input from a whole register history: `(key, ops, operations)` where
/// `ops[i]` is the recorded operation behind `operations[i]`.
pub fn per_key(history: &[RegisterOp], keys: usize) -> Vec<(Vec<&RegisterOp>, Vec<linearizability::Operation>)> {
    let mut out: Vec<(Vec<&RegisterOp>, Vec<Operation>)> = (0..keys).map(|_| (Vec::new(), Vec::new())).collect();
    for op in history {
        if let Some(operation) = op.to_operation()
            && let Some(slot) = out.get_mut(op.key)
        {
            slot.0.push(op);
            slot.1.push(operation);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_line_reads_back_as_written() {
        for (call, outcome) in [
            (Call::Put { value: 7 }, Outcome::Ok { value: None, swapped: Some(true) }),
            (Call::Get, Outcome::Ok { value: Some(7), swapped: None }),
            (Call::Cas { expected: 7, new: 8 }, Outcome::Unknown { error: "timeout".into() }),
            (Call::Put { value: 9 }, Outcome::Fail { error: "refused".into() }),
        ] {
            let op = RegisterOp { client: 1, master: 2, key: 3, call, invoked: 10, completed: 20, outcome };
            let line = serde_json::to_string(&op).expect("serializable");
            assert_eq!(serde_json::from_str::<RegisterOp>(&line).expect(&line), op);
        }
    }
}

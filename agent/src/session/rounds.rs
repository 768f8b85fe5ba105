//! Operations that belong together: the rounds of one logical call
//! (2026-07-28 multi round-trip requests) and the task requests of the call
//! that created the task.
//!
//! **Rounds.** A server that needs input answers a request with
//! `resultType: "input_required"` (its `inputRequests`, often an opaque
//! `requestState`); the client asks its user, then sends the request again,
//! under a new id, with `inputResponses` and the `requestState` back. Each
//! round is a JSON-RPC request of its own (2026-07-28 has no session: the
//! retry may come on another connection), so each is an operation; they
//! share one call id here, each with its round number, and the last carries
//! the logical call's duration and the time spent waiting for input (from
//! each `input_required` answer to the next round's request). A retry is
//! the round after the one whose `requestState` it carries back; without a
//! state, the latest round of the same method and name by the same server
//! (and side) that asked for the keys it answers.
//!
//! **Tasks.** A request answered with `result.task.taskId` created a task;
//! later `tasks/*` requests naming it (`params.taskId`) are tied to that
//! call: its call id and its tool.
//!
//! Both tables are bounded ([`MAX_OPEN`]: the oldest go first) and forget
//! what was not continued within the request timeout.

use std::collections::HashMap;

use super::{Direction, LogicalCall, Observer, Operation, SessionKey, Status, TaskLink};

/// Logical calls waiting for their next round, and tasks, at most.
pub const MAX_OPEN: usize = 4096;

/// A call whose last round asked for input.
#[derive(Debug, Clone)]
struct Open {
    call_id: String,
    /// When its first round's request was seen.
    first_ts_ns: u64,
    rounds: u32,
    /// When its last round was answered `input_required`.
    asked_ts_ns: u64,
    /// Time spent waiting for input so far.
    waited_ns: u64,
    method: String,
    name: Option<String>,
    /// The keys of the input it asked for.
    keys: Vec<String>,
    /// The digest of the state it handed out.
    state: Option<String>,
}

/// Who a call is with: the watched process and its side (the same server
/// process watched from both sides makes two calls, one per side).
type Party = (u32, Observer);

/// What a request carried that ties it to earlier operations (kept with
/// the request until its answer).
#[derive(Debug, Clone, Default)]
pub struct RequestLinks {
    pub request_state: Option<String>,
    pub input_keys: Option<Vec<String>>,
    pub task_id: Option<String>,
}

/// What its answer said.
#[derive(Debug, Clone, Default)]
pub struct AnswerLinks {
    pub input_required: bool,
    pub request_state: Option<String>,
    pub input_keys: Option<Vec<String>>,
    pub task_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct Rounds {
    open: HashMap<u64, (Party, Open)>,
    next: u64,
    tasks: HashMap<(Party, String), (TaskLink, u64)>,
}

fn party(key: &SessionKey) -> Party {
    (key.tgid(), key.observer())
}

impl Rounds {
    /// Ties a finished operation to the rounds before it and the task it
    /// concerns; sets its status `input_required` when its answer asked for
    /// input.
    pub fn link(&mut self, op: &mut Operation, request: &RequestLinks, answer: &AnswerLinks) {
        if op.direction != Direction::ClientToServer {
            return;
        }
        let who = party(&op.key);
        self.link_task(op, who, request, answer);
        let retry = request.request_state.is_some() || request.input_keys.is_some();
        let found = retry.then(|| self.find(who, op, request)).flatten();
        if found.is_none() && !answer.input_required {
            return;
        }
        let id = match found {
            Some(id) => id,
            None => {
                self.next += 1;
                let id = self.next;
                self.bound();
                self.open.insert(
                    id,
                    (
                        who,
                        Open {
                            call_id: uuid::Uuid::new_v4().to_string(),
                            first_ts_ns: op.request_ts_ns,
                            rounds: 0,
                            asked_ts_ns: op.request_ts_ns,
                            waited_ns: 0,
                            method: op.method.clone(),
                            name: op.name.clone(),
                            keys: Vec::new(),
                            state: None,
                        },
                    ),
                );
                id
            }
        };
        let Some((_, open)) = self.open.get_mut(&id) else {
            return;
        };
        if open.rounds > 0 {
            open.waited_ns += op.request_ts_ns.saturating_sub(open.asked_ts_ns);
        }
        open.rounds += 1;
        let round = open.rounds;
        let call_id = open.call_id.clone();
        if answer.input_required && op.status == Status::Ok {
            op.status = Status::InputRequired;
            open.asked_ts_ns = op.end_ts_ns.unwrap_or(op.request_ts_ns);
            open.keys = answer.input_keys.clone().unwrap_or_default();
            open.state = answer.request_state.clone();
            op.links.call = Some(LogicalCall {
                call_id,
                round,
                duration_ns: None,
                input_wait_ns: None,
            });
            return;
        }
        // The last round (answered, failed, or ended otherwise).
        let (first, waited) = (open.first_ts_ns, open.waited_ns);
        self.open.remove(&id);
        op.links.call = Some(LogicalCall {
            call_id,
            round,
            duration_ns: op.end_ts_ns.map(|end| end.saturating_sub(first)),
            input_wait_ns: Some(waited),
        });
    }

    /// The open call a retry continues: by the state it carries back, else
    /// the latest of the same method and name that asked for its keys.
    fn find(&self, who: Party, op: &Operation, request: &RequestLinks) -> Option<u64> {
        let mine = self.open.iter().filter(|(_, (p, o))| {
            *p == who && o.method == op.method && o.name == op.name && o.asked_ts_ns <= op.request_ts_ns
        });
        if let Some(state) = &request.request_state {
            return mine
                .filter(|(_, (_, o))| o.state.as_ref() == Some(state))
                .max_by_key(|(_, (_, o))| o.asked_ts_ns)
                .map(|(id, _)| *id);
        }
        let keys = request.input_keys.as_deref().unwrap_or_default();
        mine.filter(|(_, (_, o))| o.state.is_none() && keys.iter().all(|k| o.keys.contains(k)))
            .max_by_key(|(_, (_, o))| o.asked_ts_ns)
            .map(|(id, _)| *id)
    }

    fn link_task(&mut self, op: &mut Operation, who: Party, request: &RequestLinks, answer: &AnswerLinks) {
        if let Some(task) = &answer.task_id
            && !op.method.starts_with("tasks/")
        {
            // This request created the task: it gets a call id if it has
            // none (rounds set theirs after this), which its task's
            // requests share.
            let call_id = op
                .links
                .call
                .as_ref()
                .map(|c| c.call_id.clone())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let link = TaskLink {
                task_id: task.clone(),
                call_id,
                tool: op.name.clone(),
            };
            op.links.task = Some(link.clone());
            if self.tasks.len() >= MAX_OPEN
                && let Some(oldest) = self.tasks.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone())
            {
                self.tasks.remove(&oldest);
            }
            self.tasks.insert((who, task.clone()), (link, op.request_ts_ns));
            return;
        }
        if op.method.starts_with("tasks/")
            && let Some(task) = &request.task_id
        {
            op.links.task = match self.tasks.get_mut(&(who, task.clone())) {
                Some((link, seen)) => {
                    *seen = op.request_ts_ns;
                    Some(link.clone())
                }
                // A task created before the agent looked: named, not tied.
                None => Some(TaskLink {
                    task_id: task.clone(),
                    call_id: String::new(),
                    tool: None,
                }),
            };
            if op.method == "tasks/cancel" {
                self.tasks.remove(&(who, task.clone()));
            }
        }
    }

    fn bound(&mut self) {
        if self.open.len() >= MAX_OPEN
            && let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, (_, o))| o.asked_ts_ns)
                .map(|(id, _)| *id)
        {
            self.open.remove(&oldest);
        }
    }

    /// Forgets calls not continued, and tasks not asked about, within
    /// `timeout_ns` of `now_ns`.
    pub fn expire(&mut self, now_ns: u64, timeout_ns: u64) {
        self.open
            .retain(|_, (_, o)| now_ns.saturating_sub(o.asked_ts_ns) <= timeout_ns);
        self.tasks.retain(|_, (_, t)| now_ns.saturating_sub(*t) <= timeout_ns);
    }

    /// The process ended: what it had open goes.
    pub fn forget(&mut self, tgid: u32) {
        self.open.retain(|_, (p, _)| p.0 != tgid);
        self.tasks.retain(|(p, _), _| p.0 != tgid);
    }

    /// Entries held (`mcptap_table_entries`).
    pub fn sizes(&self) -> [usize; 2] {
        [self.open.len(), self.tasks.len()]
    }
}

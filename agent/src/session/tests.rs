use super::*;
use crate::protocol::jsonrpc::parse;

const S1: SessionKey = SessionKey::Stdio { tgid: 100 };
const S2: SessionKey = SessionKey::Stdio { tgid: 200 };
const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn msg(s: &str) -> Message {
    let mut p = parse(s.as_bytes(), false);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    p.messages.remove(0)
}

fn table() -> SessionTable {
    let mut t = SessionTable::new(SessionConfig {
        request_timeout_ns: 1_000,
        ..SessionConfig::default()
    });
    let mut out = Vec::new();
    t.open(&S1, Origin::Selected, 0, &mut out);
    t
}

fn ops(out: &[Output]) -> Vec<&Operation> {
    out.iter()
        .filter_map(|o| match o {
            Output::Operation(op) => Some(&**op),
            _ => None,
        })
        .collect()
}

fn call(id: u32, tool: &str) -> Message {
    msg(&format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    ))
}

fn result(id: u32, is_error: bool) -> Message {
    msg(&format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[],"isError":{is_error}}}}}"#
    ))
}

#[test]
fn correlates_request_and_response_with_latency() {
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(&S1, C2S, 1_000, call(1, "add"), None, &mut out);
    t.on_message(&S1, S2C, 4_000, result(1, false), None, &mut out);
    let ops = ops(&out);
    assert_eq!(ops.len(), 1);
    let op = ops[0];
    assert_eq!(
        (op.method.as_str(), op.name.as_deref(), op.status),
        ("tools/call", Some("add"), Status::Ok)
    );
    assert_eq!(op.end_ts_ns.unwrap() - op.request_ts_ns, 3_000);
    assert_eq!(op.error_type(), None);
    assert!(op.response_bytes.unwrap() > 0);
}

#[test]
fn tool_error_and_jsonrpc_error() {
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(&S1, C2S, 1, call(1, "fails"), None, &mut out);
    t.on_message(&S1, S2C, 2, result(1, true), None, &mut out);
    t.on_message(&S1, C2S, 3, call(2, "nope"), None, &mut out);
    t.on_message(
        &S1,
        S2C,
        4,
        msg(r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Unknown tool"}}"#),
        None,
        &mut out,
    );
    let ops = ops(&out);
    assert_eq!(ops[0].status, Status::ToolError);
    assert_eq!(ops[0].error_type().as_deref(), Some("tool_error"));
    assert_eq!(ops[1].status, Status::Error);
    assert_eq!(ops[1].error_type().as_deref(), Some("-32602"));
}

#[test]
fn same_ids_in_two_sessions_do_not_mix() {
    let mut t = table();
    let mut out = Vec::new();
    t.open(&S2, Origin::Selected, 0, &mut out);
    t.on_message(&S1, C2S, 10, call(1, "a"), None, &mut out);
    t.on_message(&S2, C2S, 20, call(1, "b"), None, &mut out);
    t.on_message(&S2, S2C, 25, result(1, true), None, &mut out);
    t.on_message(&S1, S2C, 40, result(1, false), None, &mut out);
    let ops = ops(&out);
    assert_eq!(
        (ops[0].name.as_deref(), ops[0].status, ops[0].key.clone()),
        (Some("b"), Status::ToolError, S2)
    );
    assert_eq!(
        (ops[1].name.as_deref(), ops[1].status, ops[1].key.clone()),
        (Some("a"), Status::Ok, S1)
    );
    assert_eq!(ops[1].end_ts_ns.unwrap() - ops[1].request_ts_ns, 30);
}

#[test]
fn same_id_in_both_directions_of_one_session() {
    // Client request 0 and a server sampling request 0 are in flight at once.
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(&S1, C2S, 1, call(0, "ask"), None, &mut out);
    t.on_message(
        &S1,
        S2C,
        2,
        msg(r#"{"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{"messages":[]}}"#),
        None,
        &mut out,
    );
    t.on_message(
        &S1,
        C2S,
        3,
        msg(r#"{"jsonrpc":"2.0","id":0,"result":{"role":"assistant","content":{"type":"text","text":"hi"}}}"#),
        None,
        &mut out,
    );
    t.on_message(&S1, S2C, 9, result(0, false), None, &mut out);
    let ops = ops(&out);
    assert_eq!(ops.len(), 2);
    assert_eq!(
        (ops[0].method.as_str(), ops[0].direction),
        ("sampling/createMessage", S2C)
    );
    assert_eq!((ops[1].method.as_str(), ops[1].direction), ("tools/call", C2S));
    assert_eq!(ops[1].end_ts_ns.unwrap() - ops[1].request_ts_ns, 8);
}

#[test]
fn cancellation_ends_the_request_and_a_late_answer_is_unmatched() {
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(&S1, C2S, 1, call(7, "slow"), None, &mut out);
    t.on_message(
        &S1,
        C2S,
        5,
        msg(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#),
        None,
        &mut out,
    );
    t.on_message(&S1, S2C, 9, result(7, false), None, &mut out);
    let ops = ops(&out);
    assert_eq!(ops.len(), 1);
    assert_eq!((ops[0].status, ops[0].end_ts_ns), (Status::Cancelled, Some(5)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Notification(n) if n.method == "notifications/cancelled"))
    );
    assert!(out.iter().any(|o| matches!(o, Output::Unmatched)));
}

#[test]
fn timeouts_and_server_exit() {
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(&S1, C2S, 100, call(1, "hang"), None, &mut out);
    t.on_message(&S1, C2S, 900, call(2, "later"), None, &mut out);
    t.expire(1_500, &mut out);
    let timed_out = ops(&out);
    assert_eq!(timed_out.len(), 1);
    assert_eq!(
        (
            timed_out[0].name.as_deref(),
            timed_out[0].status,
            timed_out[0].end_ts_ns
        ),
        (Some("hang"), Status::Timeout, None)
    );
    out.clear();
    t.close(&S1, 1_600, Status::ServerExited, &mut out);
    let exited = ops(&out);
    assert_eq!(
        (exited[0].name.as_deref(), exited[0].status),
        (Some("later"), Status::ServerExited)
    );
    assert!(matches!(out.last(), Some(Output::SessionEnded { .. })));
    assert!(!t.contains(&S1));
}

#[test]
fn discovery_confirms_mcp_and_replays_held_server_messages() {
    let mut t = SessionTable::new(SessionConfig::default());
    let mut out = Vec::new();
    t.open(&S2, Origin::Discovered, 0, &mut out);
    assert!(out.is_empty());
    // The server's log notification is written before the client's first line parses.
    t.on_message(
        &S2,
        S2C,
        1,
        msg(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
        None,
        &mut out,
    );
    assert!(out.is_empty());
    t.on_message(
        &S2,
        C2S,
        2,
        msg(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cli","version":"9"}}}"#),
        None, &mut out,
    );
    assert!(matches!(
        out[0],
        Output::Discovery {
            tgid: 200,
            found: Discovered::Mcp
        }
    ));
    assert!(matches!(out[1], Output::SessionStarted { .. }));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Notification(n) if n.method == "notifications/tools/list_changed"))
    );
    out.clear();
    t.on_message(&S2, S2C, 3, msg(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"srv","version":"1.2"}}}"#), None, &mut out);
    let op = ops(&out)[0];
    assert_eq!(op.method, "initialize");
    assert_eq!(op.session.client.as_ref().unwrap().name, "cli");
    assert_eq!(op.session.server.as_ref().unwrap().name, "srv");
    assert_eq!(op.session.protocol_version.as_deref(), Some("2025-06-18"));
}

#[test]
fn discovery_rejects_other_json() {
    let mut t = SessionTable::new(SessionConfig::default());
    let mut out = Vec::new();
    t.open(&S2, Origin::Discovered, 0, &mut out);
    t.on_message(
        &S2,
        C2S,
        1,
        msg(r#"{"jsonrpc":"2.0","id":1,"method":"textDocument/hover"}"#),
        None,
        &mut out,
    );
    assert!(matches!(
        out.as_slice(),
        [Output::Discovery {
            tgid: 200,
            found: Discovered::NotMcp
        }]
    ));
    assert!(!t.contains(&S2));
    let mut out = Vec::new();
    t.open(&S2, Origin::Discovered, 0, &mut out);
    t.on_malformed(&S2, C2S, &mut out);
    assert!(matches!(
        out.as_slice(),
        [Output::Discovery {
            tgid: 200,
            found: Discovered::NotMcp
        }]
    ));
}

#[test]
fn stateless_requests_carry_their_own_client() {
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(
        &S1,
        C2S,
        1,
        msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"modern","version":"2"}}}}"#),
        None, &mut out,
    );
    t.on_message(&S1, S2C, 2, msg(r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"srv26","version":"3"}}}}"#), None, &mut out);
    let op = ops(&out)[0];
    assert_eq!(op.request_client.as_ref().unwrap().name, "modern");
    assert_eq!(op.session.protocol_version.as_deref(), Some("2026-07-28"));
    assert_eq!(op.session.server.as_ref().unwrap().name, "srv26");
    assert_eq!(op.result_type.as_deref(), Some("complete"));
}

#[test]
fn duplicate_ids_and_bounded_pending() {
    let mut t = SessionTable::new(SessionConfig {
        max_pending: 2,
        ..SessionConfig::default()
    });
    let mut out = Vec::new();
    t.open(&S1, Origin::Selected, 0, &mut out);
    t.on_message(&S1, C2S, 1, call(1, "a"), None, &mut out);
    t.on_message(&S1, C2S, 2, call(1, "b"), None, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::DuplicateId)));
    t.on_message(&S1, C2S, 3, call(2, "c"), None, &mut out);
    out.clear();
    t.on_message(&S1, C2S, 4, call(3, "d"), None, &mut out);
    // The oldest still pending ("b", which replaced "a") ends as evicted:
    // an event and a count, never silence.
    let evicted = ops(&out);
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        (evicted[0].name.as_deref(), evicted[0].status),
        (Some("b"), Status::Evicted)
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Evicted {
            what: "request",
            why: "max_pending",
            tgid: 100
        }
    )));
    out.clear();
    t.close(&S1, 5, Status::ServerExited, &mut out);
    assert_eq!(ops(&out).len(), 2, "c and d were still in flight");
}

#[test]
fn one_process_cannot_push_out_anothers_sessions() {
    let mut t = SessionTable::new(SessionConfig {
        max_sessions: 64,
        max_sessions_per_process: 8,
        ..SessionConfig::default()
    });
    let mut out = Vec::new();
    // Another process's session, active long ago.
    t.open(&S2, Origin::Selected, 0, &mut out);
    t.on_message(&S2, C2S, 1, call(1, "keep"), None, &mut out);
    // A client naming a new HTTP session in every request.
    let http = |n: u64| SessionKey::Http {
        tgid: 100,
        observer: Observer::Server,
        scope: HttpScope::Session(format!("s{n}").into()),
    };
    for n in 0..100 {
        t.on_message(&http(n), C2S, 10 + n, call(1, "junk"), None, &mut out);
    }
    assert!(t.contains(&S2), "the other process's session stays");
    let sizes = t.sizes();
    assert!(sizes[0] <= 9, "{sizes:?}");
    let evicted = out
        .iter()
        .filter(|o| matches!(o, Output::Evicted { what: "session", .. }))
        .count();
    assert!(evicted >= 90, "{evicted}");
    assert!(ops(&out).iter().all(|o| o.name.as_deref() == Some("junk")));
    assert!(ops(&out).iter().all(|o| o.status == Status::Evicted));
}

/// 2026-07-28 multi round-trip requests: the rounds of one call share its
/// id, the first is `input_required` (not ok), the last carries the call's
/// duration and the time spent waiting for input.
#[test]
fn rounds_of_one_call_are_one_call() {
    for with_state in [true, false] {
        let mut t = table();
        let mut out = Vec::new();
        let state = if with_state { r#","requestState":"s-1""# } else { "" };
        t.on_message(
            &S1,
            C2S,
            1_000,
            msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{}}}"#),
            None,
            &mut out,
        );
        t.on_message(&S1, S2C, 2_000, msg(&format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"resultType":"input_required","inputRequests":{{"env":{{"method":"elicitation/create"}}}}{state}}}}}"#)), None, &mut out);
        // Another call of another tool in between: not a round of it.
        t.on_message(&S1, C2S, 3_000, call(7, "add"), None, &mut out);
        t.on_message(&S1, S2C, 3_500, result(7, false), None, &mut out);
        // The user answers; the client retries under a new id.
        t.on_message(&S1, C2S, 10_000, msg(&format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"deploy","arguments":{{}},"inputResponses":{{"env":{{"action":"accept"}}}}{state}}}}}"#)), None, &mut out);
        t.on_message(
            &S1,
            S2C,
            12_000,
            msg(r#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","content":[]}}"#),
            None,
            &mut out,
        );
        let ops = ops(&out);
        assert_eq!(ops.len(), 3);
        let (first, add, last) = (ops[0], ops[1], ops[2]);
        assert_eq!(first.status, Status::InputRequired);
        assert_eq!(first.error_type(), None);
        assert_eq!(add.links.call, None, "another call");
        let (a, b) = (first.links.call.clone().unwrap(), last.links.call.clone().unwrap());
        assert_eq!(a.call_id, b.call_id, "state {with_state}");
        assert_eq!((a.round, b.round), (1, 2));
        assert_eq!(a.duration_ns, None);
        assert_eq!(last.status, Status::Ok);
        assert_eq!(b.duration_ns, Some(11_000), "first request to last answer");
        assert_eq!(b.input_wait_ns, Some(8_000), "input_required answer to the retry");
        // A later call of the same tool, with nothing carried back: new.
        t.on_message(&S1, C2S, 20_000, call(3, "deploy"), None, &mut out);
        t.on_message(&S1, S2C, 21_000, result(3, false), None, &mut out);
        assert_eq!(ops_last(&out).links.call, None);
    }
}

/// Tasks: the requests about a task are tied to the call that created it.
#[test]
fn a_tasks_requests_are_tied_to_the_call_that_created_it() {
    let mut t = table();
    let mut out = Vec::new();
    t.on_message(&S1, C2S, 1_000, msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"build","arguments":{},"task":{"ttl":60000}}}"#), None, &mut out);
    t.on_message(
        &S1,
        S2C,
        2_000,
        msg(r#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t-9","status":"working"}}}"#),
        None,
        &mut out,
    );
    t.on_message(
        &S1,
        C2S,
        3_000,
        msg(r#"{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":"t-9"}}"#),
        None,
        &mut out,
    );
    t.on_message(
        &S1,
        S2C,
        4_000,
        msg(r#"{"jsonrpc":"2.0","id":2,"result":{"taskId":"t-9","status":"completed"}}"#),
        None,
        &mut out,
    );
    t.on_message(
        &S1,
        C2S,
        5_000,
        msg(r#"{"jsonrpc":"2.0","id":3,"method":"tasks/get","params":{"taskId":"t-unknown"}}"#),
        None,
        &mut out,
    );
    t.on_message(
        &S1,
        S2C,
        6_000,
        msg(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
        None,
        &mut out,
    );
    let ops = ops(&out);
    let created = ops[0].links.task.clone().unwrap();
    let get = ops[1].links.task.clone().unwrap();
    assert_eq!(created.task_id, "t-9");
    assert_eq!(get, created, "the same task, call and tool");
    assert_eq!(get.tool.as_deref(), Some("build"));
    let unknown = ops[2].links.task.clone().unwrap();
    assert_eq!((unknown.task_id.as_str(), unknown.call_id.as_str()), ("t-unknown", ""));
}

fn ops_last(out: &[Output]) -> &Operation {
    ops(out).pop().expect("an operation")
}

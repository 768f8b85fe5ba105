//! Prometheus metrics (docs/metrics.md), named after the OpenTelemetry MCP
//! conventions, and the HTTP endpoint that serves them.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use mcptap_common::counter;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{
    enrich::operation::OperationRecord,
    session::{Direction, Observer, Transport},
};

/// Latency buckets (seconds): the OpenTelemetry MCP recommendation, with
/// finer steps below 10 ms where local stdio tools live.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

const OP_LABELS: &[&str] = &[
    "mcp_method_name",
    "gen_ai_tool_name",
    "error_type",
    "network_transport",
    "mcp_client_name",
    "mcp_server_name",
];

pub struct Metrics {
    /// The capture loop's last turn (unix ms): `/healthz` fails when it
    /// stalls.
    pub heartbeat_ms: std::sync::atomic::AtomicI64,
    /// Kernel programs attached and the loop running: `/readyz`.
    pub ready: std::sync::atomic::AtomicBool,
    pub registry: Registry,
    server_duration: HistogramVec,
    server_operations: IntCounterVec,
    /// Operations per user (a token's identity, else the client process's
    /// owner), server and tool.
    user_operations: IntCounterVec,
    /// CPU seconds spent for each user, per server.
    user_cpu: prometheus::CounterVec,
    /// The tools each server offers (its latest `tools/list` answer), 1 per
    /// tool: with the calls, the tools never called.
    tools_offered: IntGaugeVec,
    /// What each server offered last (to retire what it no longer offers).
    offered_last: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// CPU seconds servers spent on operations, per server and tool.
    server_cpu: HistogramVec,
    /// Side effects attributed to operations, per server, tool and kind.
    operation_effects: IntCounterVec,
    /// Side effects by kind and how they were attributed (`exact`,
    /// `overlap`, `none`: the server had no request in flight).
    effects: IntCounterVec,
    /// Effects left out by a bound (`per_kind`: not listed in the event;
    /// `per_operation`: not kept for the policy either).
    effects_bounded: IntCounterVec,
    effect_names: IntCounterVec,
    client_duration: HistogramVec,
    client_operations: IntCounterVec,
    notifications: IntCounterVec,
    active_sessions: IntGaugeVec,
    messages: IntCounterVec,
    message_bytes: IntCounterVec,
    truncated_messages: IntCounter,
    pub parse_errors: IntCounterVec,
    capture_lost: IntCounterVec,
    capture_lost_bytes: IntCounterVec,
    capture_chunks: IntCounter,
    capture_bytes: IntCounter,
    capture_gaps: IntCounter,
    discovery_sniffs: IntCounter,
    fd_beyond_bitmap: IntCounter,
    pub record_decode_errors: IntCounter,
    pub discovery: IntCounterVec,
    pub unmatched_responses: IntCounter,
    pub duplicate_request_ids: IntCounter,
    pub events: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub sink_filtered: IntCounterVec,
    pub sink_delivered: IntCounterVec,
    pub sink_failures: IntCounterVec,
    pub sink_up: IntGaugeVec,
    pub sink_spool_bytes: IntGaugeVec,
    label_overflow: IntCounterVec,
    /// Names and ids cut to their bound, by field.
    fields_cut: IntCounterVec,
    /// HTTP requests whose `Mcp-Method`/`Mcp-Name` disagreed with the body.
    header_mismatches: IntCounter,
    /// Requests and sessions ended to make room (`what`, `why`).
    pub evicted: IntCounterVec,
    pub tracked_processes: IntGauge,
    pub http_unsupported: IntCounterVec,
    pub tls_hooked_files: IntGaugeVec,
    pub tls_hook_errors: IntGauge,
    tls_discovery: IntCounterVec,
    exec_gate_execs: IntCounterVec,
    exec_gate_ignored: IntGauge,
    exec_gate_filesystems: IntGauge,
    exec_gate_hold: Histogram,
    /// 1 for the syscall hook family in use, the kernel object loaded, and
    /// why (`mcptap check` says the same in words).
    pub capture_hooks: IntGaugeVec,
    /// Entries of each table the agent keeps (userspace and the kernel's
    /// maps): a soak test checks none grows.
    pub tables: IntGaugeVec,
    pub tls_hooked_processes: IntGauge,
    pub tls_unsupported: IntGaugeVec,
    pub discovery_budget_exhausted: IntGauge,
    pub peer_scans_skipped: IntGauge,
    net_sniffs: IntCounterVec,
    tls_unpaired: IntCounter,
    sockets_not_http: IntCounter,
    alerts: IntCounterVec,
    pub policy_reloads: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

/// Every `kind` of `mcptap_parse_errors_total` (docs/metrics.md).
const PARSE_ERROR_KINDS: &[&str] = &[
    "invalid_json",
    "invalid_utf8",
    "invalid_utf8_replaced",
    "not_jsonrpc",
    "empty_batch",
    "truncated_unusable",
    "capture_gap",
    "exited_mid_message",
    "closed_mid_message",
    "not_http",
    "bad_request_head",
    "bad_response_head",
    "head_too_large",
    "bad_chunk_size",
    "bad_chunk_framing",
    "bad_compressed_body",
    "compressed_body_too_large",
    "unsupported_content_encoding",
];

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        // The agent's own CPU, memory and file descriptors (process_*), for
        // the dashboards' agent health.
        #[cfg(target_os = "linux")]
        if let Err(err) = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
            tracing::warn!("cannot export the agent's process metrics: {err}");
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid metric"));
        let m = Metrics {
            server_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "mcp_server_operation_duration_seconds",
                        "MCP request duration observed at the server: request read to response written",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    OP_LABELS,
                )
                .expect("valid metric"),
            ),
            server_operations: counter_vec(
                "mcp_server_operations_total",
                "MCP requests observed at the server, by how they ended",
                &[OP_LABELS, &["status"]].concat(),
            ),
            user_operations: counter_vec(
                "mcp_user_operations_total",
                "MCP requests by the user they were made for (an HTTP credential's identity, else the client process's owner), the client application, server and tool",
                &["user", "user_source", "client_app", "mcp_server_name", "gen_ai_tool_name"],
            ),
            user_cpu: register(
                &r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "mcp_user_cpu_seconds_total",
                        "CPU seconds servers spent on calls, by the user they were made for and the server",
                    ),
                    &["user", "mcp_server_name"],
                )
                .expect("valid metric"),
            ),
            tools_offered: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcp_server_tool_offered",
                        "1 for each tool a server offers (its latest tools/list answer)",
                    ),
                    &["mcp_server_name", "gen_ai_tool_name"],
                )
                .expect("valid metric"),
            ),
            offered_last: std::sync::Mutex::new(HashMap::new()),
            server_cpu: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "mcp_server_operation_cpu_seconds",
                        "CPU time the server process spent between a request and its answer (scheduler accounting; with other requests in flight, theirs included)",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["mcp_server_name", "gen_ai_tool_name", "attribution"],
                )
                .expect("valid metric"),
            ),
            operation_effects: counter_vec(
                "mcp_server_operation_effects_total",
                "Side effects of servers (files, programs, connections, listeners) attributed to an operation, per server, tool and kind",
                &["mcp_server_name", "gen_ai_tool_name", "kind"],
            ),
            effects: counter_vec(
                "mcptap_effects_total",
                "Side effects of servers seen by the kernel, by kind and attribution (none: no request in flight)",
                &["kind", "attribution"],
            ),
            effects_bounded: counter_vec(
                "mcptap_effects_bounded_total",
                "Side effects a bound left out: per_kind (counted in the event, not listed: --effects-per-kind), per_operation (past --effects-per-operation: not checked by the policy either), in_flight (requests: a server had more than 256 in flight, the oldest is no longer followed)",
                &["bound"],
            ),
            effect_names: counter_vec(
                "mcptap_effect_names_total",
                "How connections got their host names: dns_answer (a DNS answer a server process read), dns_unreadable (bytes read from port 53 that were no DNS answer: dropped), hello_named (a connection's first bytes named its host: TLS SNI, HTTP Host), hello_unnamed (they did not: another protocol, or cut before the name), hello_late (the connection's operation had ended)",
                &["outcome"],
            ),
            client_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "mcp_client_operation_duration_seconds",
                        "MCP request duration observed at the client: request written to response read",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    OP_LABELS,
                )
                .expect("valid metric"),
            ),
            client_operations: counter_vec(
                "mcp_client_operations_total",
                "MCP requests observed at the client, by how they ended",
                &[OP_LABELS, &["status"]].concat(),
            ),
            notifications: counter_vec(
                "mcp_notifications_total",
                "MCP notifications",
                &["mcp_method_name", "network_transport", "direction"],
            ),
            active_sessions: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("mcp_active_sessions", "MCP sessions being watched"),
                    &["network_transport"],
                )
                .expect("valid metric"),
            ),
            messages: counter_vec(
                "mcptap_messages_total",
                "JSON-RPC messages parsed",
                &["network_transport", "direction"],
            ),
            message_bytes: counter_vec(
                "mcptap_message_bytes_total",
                "Bytes of JSON-RPC messages parsed",
                &["network_transport", "direction"],
            ),
            truncated_messages: counter(
                "mcptap_truncated_messages_total",
                "Messages longer than --max-message-bytes (kept prefix used)",
            ),
            parse_errors: counter_vec(
                "mcptap_parse_errors_total",
                "Frames that were not usable JSON-RPC, and bytes cut by capture gaps or process exits",
                &["kind"],
            ),
            capture_lost: counter_vec(
                "mcptap_capture_lost_total",
                "Kernel-side losses: ring buffer full (records), failed copies and truncated calls (calls)",
                &["reason"],
            ),
            capture_lost_bytes: counter_vec(
                "mcptap_capture_lost_bytes_total",
                "Bytes the kernel did not deliver",
                &["reason"],
            ),
            capture_chunks: counter("mcptap_capture_chunks_total", "Chunk records the kernel delivered"),
            capture_bytes: counter("mcptap_capture_bytes_total", "Payload bytes the kernel delivered"),
            capture_gaps: counter(
                "mcptap_capture_gaps_total",
                "Places in streams where bytes were missing",
            ),
            discovery_sniffs: counter(
                "mcptap_discovery_sniffs_total",
                "Stdin reads of untracked processes that looked like JSON and went to the agent",
            ),
            fd_beyond_bitmap: counter(
                "mcptap_stdio_copies_not_followed_total",
                "Copies of stdin/stdout onto fd 64 or above, which the kernel side cannot follow",
            ),
            record_decode_errors: counter(
                "mcptap_record_decode_errors_total",
                "Ring buffer records that did not decode",
            ),
            discovery: counter_vec(
                "mcptap_discovery_total",
                "Processes discovered by their first bytes",
                &["outcome"],
            ),
            unmatched_responses: counter(
                "mcptap_unmatched_responses_total",
                "Responses with no request in flight (late after cancel, or request unseen)",
            ),
            duplicate_request_ids: counter(
                "mcptap_duplicate_request_ids_total",
                "Requests reusing the id of one still in flight",
            ),
            events: counter_vec("mcptap_events_total", "Events handed to a sink", &["sink"]),
            events_dropped: counter_vec(
                "mcptap_events_dropped_total",
                "Events a sink lost, by reason: queue_full, rate_limit, spool_full, rejected, too_large, write_error, sink_stopped",
                &["sink", "reason"],
            ),
            sink_filtered: counter_vec(
                "mcptap_sink_filtered_events_total",
                "Events a sink's include/exclude filter left out (by design, not a loss)",
                &["sink"],
            ),
            sink_delivered: counter_vec(
                "mcptap_sink_delivered_events_total",
                "Events a network sink's receiver acknowledged",
                &["sink"],
            ),
            sink_failures: counter_vec(
                "mcptap_sink_delivery_failures_total",
                "Failed delivery attempts of a network sink (the events stay spooled and are retried)",
                &["sink"],
            ),
            sink_up: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcptap_sink_up",
                        "1 when a network sink's latest delivery succeeded, 0 while it fails",
                    ),
                    &["sink"],
                )
                .expect("valid metric"),
            ),
            sink_spool_bytes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcptap_sink_spool_bytes",
                        "Bytes of events waiting in a network sink's spool",
                    ),
                    &["sink"],
                )
                .expect("valid metric"),
            ),
            label_overflow: counter_vec(
                "mcptap_label_overflow_total",
                "Label values folded into \"other\" by --max-label-values",
                &["label"],
            ),
            header_mismatches: register(
                &r,
                IntCounter::new(
                    "mcptap_header_body_mismatch_total",
                    "HTTP requests whose Mcp-Method or Mcp-Name header disagreed with their body (alert header_body_mismatch)",
                )
                .expect("valid metric"),
            ),
            fields_cut: counter_vec(
                "mcptap_fields_cut_total",
                "Names, ids and messages a peer sent longer than their bound, cut (docs/events.md)",
                &["field"],
            ),
            evicted: counter_vec(
                "mcptap_evicted_total",
                "Requests in flight and sessions ended to make room (status evicted), by what and why",
                &["what", "why"],
            ),
            tracked_processes: register(
                &r,
                IntGauge::new("mcptap_tracked_processes", "Processes the kernel tracks").expect("valid metric"),
            ),
            http_unsupported: counter_vec(
                "mcptap_http_unsupported_total",
                "Connections speaking what mcptap does not parse (HTTP/2, upgrades), left alone",
                &["kind"],
            ),
            tls_hooked_files: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcptap_tls_hooked_files",
                        "Files carrying the TLS probes, by TLS library and file kind (shared_library, executable)",
                    ),
                    &["library", "kind"],
                )
                .expect("valid metric"),
            ),
            tls_unsupported: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcptap_tls_unsupported_binaries",
                        "Files whose TLS library mcptap recognised but does not probe, by reason (each file once)",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            tls_hooked_processes: register(
                &r,
                IntGauge::new(
                    "mcptap_tls_hooked_processes",
                    "Tracked processes with OpenSSL probes of their own",
                )
                .expect("valid metric"),
            ),
            tls_hook_errors: register(
                &r,
                IntGauge::new("mcptap_tls_hook_errors", "TLS probes that could not be attached").expect("valid metric"),
            ),
            tls_discovery: counter_vec(
                "mcptap_tls_discovery_total",
                "HTTPS discovery: processes whose TLS library was probed (probed), left alone because their program was found not to speak MCP lately (skipped), probed from their exec because it was found to or ended undecided last time (expected), and the verdicts (mcp, not_mcp, undecided: ended inside the window)",
                &["outcome"],
            ),
            exec_gate_execs: counter_vec(
                "mcptap_exec_gate_execs_total",
                "Execs the exec gate answered, by answer: known (an interpreter, or a file decided before), plain (read: nothing to do, not asked about again while unchanged), interpreter (its opens are looked at for an MCP SDK), mcp_program (probed before it ran), timeout (let go unanswered at the hold limit)",
                &["answer"],
            ),
            exec_gate_ignored: register(
                &r,
                IntGauge::new(
                    "mcptap_exec_gate_ignored_files",
                    "Files the kernel no longer asks the exec gate about while they are unchanged",
                )
                .expect("valid metric"),
            ),
            exec_gate_filesystems: register(
                &r,
                IntGauge::new("mcptap_exec_gate_filesystems", "Filesystems whose execs the exec gate is asked about")
                    .expect("valid metric"),
            ),
            exec_gate_hold: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "mcptap_exec_gate_hold_seconds",
                        "How long an exec waited for the exec gate's answer (files read for the first time, interpreters' and MCP programs' execs)",
                    )
                    .buckets(vec![0.0005, 0.002, 0.005, 0.02, 0.1, 0.5, 1.0]),
                )
                .expect("valid metric"),
            ),
            tables: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcptap_table_entries",
                        "Entries of each table the agent keeps, in userspace and in the kernel's maps",
                    ),
                    &["table"],
                )
                .expect("valid metric"),
            ),
            capture_hooks: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mcptap_capture_hooks_info",
                        "1 for the syscall hook family in use (fexit or tracepoint), the kernel object loaded (bpf_loop or compat), and why that family",
                    ),
                    &["family", "kernel_object", "reason"],
                )
                .expect("valid metric"),
            ),
            discovery_budget_exhausted: register(
                &r,
                IntGauge::new(
                    "mcptap_discovery_budget_exhausted",
                    "Processes no longer sniffed: their HTTP traffic was repeatedly not MCP",
                )
                .expect("valid metric"),
            ),
            peer_scans_skipped: register(
                &r,
                IntGauge::new(
                    "mcptap_peer_scans_skipped",
                    "Loopback peers not looked up because of the scan rate limit",
                )
                .expect("valid metric"),
            ),
            net_sniffs: counter_vec(
                "mcptap_net_sniffs_total",
                "Requests of untracked processes sent to the agent for discovery",
                &["channel"],
            ),
            alerts: counter_vec(
                "mcptap_alerts_total",
                "Alerts raised: policy violations, error-rate and latency spikes, first uses",
                &["kind", "rule"],
            ),
            policy_reloads: counter_vec(
                "mcptap_policy_reloads_total",
                "Policy reloads (SIGHUP), by outcome",
                &["outcome"],
            ),
            sockets_not_http: counter(
                "mcptap_connections_not_http_total",
                "Connections of watched processes whose first bytes were neither HTTP/1.x nor TLS (left alone)",
            ),
            tls_unpaired: counter(
                "mcptap_tls_unpaired_returns_total",
                "TLS calls of tracked processes whose start was not seen (in progress at attach)",
            ),
            registry: r,
            heartbeat_ms: std::sync::atomic::AtomicI64::new(0),
            ready: std::sync::atomic::AtomicBool::new(false),
        };
        let build = register(
            &m.registry,
            IntGaugeVec::new(Opts::new("mcptap_build_info", "mcptap version"), &["version"]).expect("valid metric"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Series with known label values exist from the start (at zero), so
        // that dashboards and alerts see them before the first occurrence.
        for t in [Transport::Pipe, Transport::Tcp] {
            m.active_sessions.with_label_values(&[t.as_str()]);
        }
        for kind in PARSE_ERROR_KINDS {
            m.parse_errors.with_label_values(&[kind]);
        }
        m
    }

    pub fn session_started(&self, t: Transport) {
        self.active_sessions.with_label_values(&[t.as_str()]).inc();
    }

    pub fn session_ended(&self, t: Transport) {
        self.active_sessions.with_label_values(&[t.as_str()]).dec();
    }

    pub fn message(
        &self,
        t: Transport,
        d: Direction,
        bytes: usize,
        notification: Option<&str>,
        labels: &mut LabelLimiter,
    ) {
        self.messages.with_label_values(&[t.as_str(), d.as_str()]).inc();
        self.message_bytes
            .with_label_values(&[t.as_str(), d.as_str()])
            .inc_by(bytes as u64);
        if let Some(method) = notification {
            let method = labels.bound(self, "mcp_method_name", method, None);
            self.notifications
                .with_label_values(&[&method, t.as_str(), d.as_str()])
                .inc();
        }
    }

    pub fn alert(&self, kind: &str, rule: &str, labels: &mut LabelLimiter) {
        let rule = labels.bound(self, "rule", rule, None);
        self.alerts.with_label_values(&[kind, &rule]).inc();
    }

    pub fn parse_error(&self, kind: &str) {
        self.parse_errors.with_label_values(&[kind]).inc();
    }

    pub fn field_cut(&self, field: &str) {
        self.fields_cut.with_label_values(&[field]).inc();
    }

    pub fn truncated_message(&self) {
        self.truncated_messages.inc();
    }

    pub fn gap(&self) {
        self.capture_gaps.inc();
    }

    pub fn operation(&self, record: &OperationRecord, labels: &mut LabelLimiter) {
        let op = &record.op;
        if op.links.header_mismatch.is_some() {
            self.header_mismatches.inc();
        }
        let tool = record.tool.as_deref().unwrap_or("");
        let client = record.client_name.as_deref().unwrap_or("");
        let server = record.server_name.as_deref().unwrap_or("");
        // Whose words these are: the watched process's user. Each user has
        // label values of their own (see `LabelLimiter`).
        let watched = match op.key.observer() {
            Observer::Server => record.peers.server.as_ref(),
            Observer::Client => record.peers.client.as_ref(),
        };
        let owner = watched.and_then(|p| p.uid);
        let mut values = [
            labels.bound(self, "mcp_method_name", &op.method, owner),
            labels.bound(self, "gen_ai_tool_name", tool, owner),
            op.error_type().unwrap_or_default(),
            op.transport().as_str().to_string(),
            labels.bound(self, "mcp_client_name", client, owner),
            labels.bound(self, "mcp_server_name", server, owner),
        ];
        if !labels.new_series(self, owner, &values) {
            for i in [0, 1, 4, 5] {
                values[i] = OVERFLOW_VALUE.to_string();
            }
        }
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let (duration, operations) = match op.key.observer() {
            Observer::Server => (&self.server_duration, &self.server_operations),
            Observer::Client => (&self.client_duration, &self.client_operations),
        };
        if let Some(d) = op.duration_s() {
            duration.with_label_values(&refs).observe(d);
        }
        let mut with_status = refs.clone();
        with_status.push(op.status.as_str());
        operations.with_label_values(&with_status).inc();
        let source = match record.identity.as_ref().and_then(|i| i.source) {
            Some(s) => s.as_str(),
            None if record.user().is_some() => "process",
            None => "",
        };
        let user = labels.bound(self, "user", record.user().unwrap_or(""), owner);
        let app = record.peers.client_app.unwrap_or("");
        self.user_operations
            .with_label_values(&[user.as_str(), source, app, values[5].as_str(), values[1].as_str()])
            .inc();
        if let Some(offered) = &op.offered_tools {
            self.tools_offered_by(
                &values[5],
                offered
                    .iter()
                    .map(|t| labels.bound(self, "gen_ai_tool_name", &t.name, owner)),
            );
        }
        if let Some(fx) = &record.effects {
            if let Some(cpu) = fx.cpu {
                self.server_cpu
                    .with_label_values(&[values[5].as_str(), values[1].as_str(), cpu.attribution.as_str()])
                    .observe(cpu.seconds);
                self.user_cpu
                    .with_label_values(&[user.as_str(), values[5].as_str()])
                    .inc_by(cpu.seconds);
            }
            let omitted: u64 = fx.effects.omitted.values().sum();
            if omitted > 0 {
                self.effects_bounded.with_label_values(&["per_kind"]).inc_by(omitted);
            }
            if fx.unchecked > 0 {
                self.effects_bounded
                    .with_label_values(&["per_operation"])
                    .inc_by(fx.unchecked);
            }
            for (kind, n) in &fx.effects.counts {
                self.operation_effects
                    .with_label_values(&[values[5].as_str(), values[1].as_str(), kind.as_str()])
                    .inc_by(*n);
            }
        }
    }

    /// A server's tools, from its latest `tools/list`: those it no longer
    /// offers leave the gauge.
    fn tools_offered_by(&self, server: &str, tools: impl Iterator<Item = String>) {
        let tools: Vec<String> = tools.collect();
        let Ok(mut last) = self.offered_last.lock() else { return };
        if let Some(before) = last.get(server) {
            for gone in before.iter().filter(|t| !tools.contains(t)) {
                let _ = self.tools_offered.remove_label_values(&[server, gone]);
            }
        }
        for t in &tools {
            self.tools_offered.with_label_values(&[server, t]).set(1);
        }
        last.insert(server.to_string(), tools);
    }

    /// Requests a server had in flight past `in_flight_per_server`: their
    /// effects are no longer tracked.
    pub fn effects_evicted(&self, n: u64) {
        self.effects_bounded.with_label_values(&["in_flight"]).inc_by(n);
    }

    /// What became of the bytes that name hosts (absolute counts: the
    /// resolver's, and the names that came after their call ended).
    pub fn effect_names(&self, c: &crate::effects::resolve::NamingCounts, late: u64) {
        for (outcome, n) in [
            ("dns_answer", c.dns_answers),
            ("dns_unreadable", c.dns_unreadable),
            ("hello_named", c.hello_named),
            ("hello_unnamed", c.hello_unnamed),
            ("hello_late", late),
        ] {
            let counter = self.effect_names.with_label_values(&[outcome]);
            counter.inc_by(n.saturating_sub(counter.get()));
        }
    }

    /// A side effect the kernel saw, and where it went.
    pub fn effect(&self, kind: crate::effects::EffectKind, placed: crate::effects::Placed) {
        let attribution = match placed {
            crate::effects::Placed::Attributed(a) => a.as_str(),
            crate::effects::Placed::Unattributed => "none",
        };
        self.effects.with_label_values(&[kind.as_str(), attribution]).inc();
    }

    /// HTTPS discovery's outcomes (absolute counts).
    pub fn tls_discovery(&self, c: &crate::capture::tls::DiscoveryCounts) {
        for (outcome, n) in [
            ("probed", c.probed),
            ("skipped", c.skipped),
            ("expected", c.expected),
            ("undecided", c.undecided),
            ("mcp", c.mcp),
            ("not_mcp", c.not_mcp),
            ("saturated", c.saturated),
            ("sdk", c.sdk),
            ("first_exec", c.first_exec),
        ] {
            let counter = self.tls_discovery.with_label_values(&[outcome]);
            counter.inc_by(n.saturating_sub(counter.get()));
        }
    }

    /// The exec gate's figures (`mcptap_exec_gate_*`).
    pub fn exec_gate(&self, g: &crate::capture::tls::gate::GateStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (answer, n) in [
            ("known", g.known.load(Relaxed)),
            ("plain", g.plain.load(Relaxed)),
            ("interpreter", g.interpreter.load(Relaxed)),
            ("mcp_program", g.mcp_program.load(Relaxed)),
            ("timeout", g.timeout.load(Relaxed)),
        ] {
            let counter = self.exec_gate_execs.with_label_values(&[answer]);
            counter.inc_by(n.saturating_sub(counter.get()));
        }
        self.exec_gate_ignored.set(g.ignored.load(Relaxed) as i64);
        self.exec_gate_filesystems.set(g.filesystems.load(Relaxed) as i64);
        for d in g.take_holds() {
            self.exec_gate_hold.observe(d.as_secs_f64());
        }
    }

    /// Exports the kernel's counters (absolute, summed over CPUs) as deltas.
    pub fn kernel_counters(&self, now: &[u64; counter::COUNT as usize], last: &mut [u64; counter::COUNT as usize]) {
        let delta = |i: u32, last: &mut [u64; counter::COUNT as usize]| {
            let i = i as usize;
            let d = now[i].saturating_sub(last[i]);
            last[i] = now[i];
            d
        };
        self.capture_chunks.inc_by(delta(counter::CHUNKS_SENT, last));
        self.capture_bytes.inc_by(delta(counter::BYTES_SENT, last));
        let lost = [
            ("ringbuf_full", counter::RINGBUF_FULL_CHUNKS),
            ("copy_failed", counter::COPY_FAILED),
            ("copy_steps_exhausted", counter::COPY_STEPS_EXHAUSTED),
            ("truncated", counter::TRUNCATED_CALLS),
            ("process_map_full", counter::PROCS_FULL),
            ("socket_map_full", counter::SOCKS_FULL),
            ("ringbuf_full_other_record", counter::RINGBUF_FULL_OTHER),
        ];
        for (reason, index) in lost {
            self.capture_lost
                .with_label_values(&[reason])
                .inc_by(delta(index, last));
        }
        for (reason, index) in [
            ("ringbuf_full", counter::RINGBUF_FULL_BYTES),
            ("truncated", counter::TRUNCATED_BYTES),
        ] {
            self.capture_lost_bytes
                .with_label_values(&[reason])
                .inc_by(delta(index, last));
        }
        self.discovery_sniffs.inc_by(delta(counter::DISCOVERY_SNIFFS, last));
        self.net_sniffs
            .with_label_values(&["socket"])
            .inc_by(delta(counter::NET_SNIFFS, last));
        self.net_sniffs
            .with_label_values(&["tls"])
            .inc_by(delta(counter::TLS_SNIFFS, last));
        self.tls_unpaired.inc_by(delta(counter::TLS_UNPAIRED, last));
        self.sockets_not_http.inc_by(delta(counter::SOCKETS_NOT_HTTP, last));
        self.fd_beyond_bitmap.inc_by(delta(counter::FD_BEYOND_BITMAP, last));
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!("encoding metrics failed: {err}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Keeps label cardinality bounded, fairly: each user (the owner of the
/// process whose words a value is: `owner`) has `max` values of each label
/// of their own, and [`SERIES_PER_VALUE`] times as many label sets; past
/// that, their new values are reported as `other` (and counted). A user
/// naming tools in a loop fills their own budget, never root's or another
/// user's. Values are cut to [`MAX_LABEL_BYTES`] (as the protocol cuts
/// names: a distinct suffix keeps long values distinct).
#[derive(Debug)]
pub struct LabelLimiter {
    max: usize,
    seen: HashMap<(&'static str, Option<u32>), HashSet<String>>,
    series: HashMap<Option<u32>, HashSet<u64>>,
}

pub const OVERFLOW_VALUE: &str = "other";

/// Longest label value kept.
pub const MAX_LABEL_BYTES: usize = 96;

/// Label sets of an operation's metrics per user: this many per value.
pub const SERIES_PER_VALUE: usize = 2;

impl LabelLimiter {
    pub fn new(max: usize) -> Self {
        LabelLimiter {
            max,
            seen: HashMap::new(),
            series: HashMap::new(),
        }
    }

    pub fn bound(&mut self, metrics: &Metrics, label: &'static str, value: &str, owner: Option<u32>) -> String {
        let value = crate::protocol::bound::cut_str(value, MAX_LABEL_BYTES);
        let seen = self.seen.entry((label, owner)).or_default();
        if seen.contains(&value) {
            return value;
        }
        if seen.len() < self.max {
            seen.insert(value.clone());
            return value;
        }
        metrics.label_overflow.with_label_values(&[label]).inc();
        OVERFLOW_VALUE.to_string()
    }

    /// Whether an operation's label set may be a series of its own (one
    /// seen before, or room left in its owner's budget); counted when not.
    pub fn new_series(&mut self, metrics: &Metrics, owner: Option<u32>, values: &[String]) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        values.hash(&mut h);
        let key = h.finish();
        let series = self.series.entry(owner).or_default();
        if series.contains(&key) {
            return true;
        }
        if series.len() < self.max.saturating_mul(SERIES_PER_VALUE) {
            series.insert(key);
            return true;
        }
        metrics.label_overflow.with_label_values(&["series"]).inc();
        false
    }
}

impl Metrics {
    /// Liveness: the capture loop turned within the last 30 s (before it
    /// first turns, the agent is starting: alive).
    fn live(&self) -> (axum::http::StatusCode, &'static str) {
        use std::sync::atomic::Ordering::Relaxed;
        let beat = self.heartbeat_ms.load(Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        if beat == 0 || now - beat < 30_000 {
            (axum::http::StatusCode::OK, "ok\n")
        } else {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "capture loop stalled\n")
        }
    }

    /// Readiness: the kernel programs are attached and events flow.
    fn ready(&self) -> (axum::http::StatusCode, &'static str) {
        if self.ready.load(std::sync::atomic::Ordering::Relaxed) {
            (axum::http::StatusCode::OK, "ready\n")
        } else {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting\n")
        }
    }
}

/// Serves `/metrics`, `/healthz` (liveness) and `/readyz` (readiness) on an
/// already bound listener.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::{Router, http::header, routing::get};
    let (health, ready) = (metrics.clone(), metrics.clone());
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/healthz", get(move || async move { health.live() }))
        .route("/readyz", get(move || async move { ready.ready() }));
    axum::serve(listener, app).await
}

/// Binds the metrics address, with an error that says what to do.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot serve metrics on {addr}: the address is in use; pick another with --metrics-addr")
        } else {
            anyhow::anyhow!("cannot serve metrics on {addr}: {err}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fold_into_other_past_the_bound() {
        let m = Metrics::new();
        let mut l = LabelLimiter::new(2);
        let root = Some(0);
        assert_eq!(l.bound(&m, "gen_ai_tool_name", "a", root), "a");
        assert_eq!(l.bound(&m, "gen_ai_tool_name", "b", root), "b");
        assert_eq!(l.bound(&m, "gen_ai_tool_name", "c", root), OVERFLOW_VALUE);
        assert_eq!(l.bound(&m, "gen_ai_tool_name", "a", root), "a");
        assert_eq!(l.bound(&m, "mcp_client_name", "c", root), "c");
        assert!(
            m.render()
                .contains("mcptap_label_overflow_total{label=\"gen_ai_tool_name\"} 1")
        );
    }

    #[test]
    fn a_user_cannot_take_another_users_label_values() {
        let m = Metrics::new();
        let mut l = LabelLimiter::new(3);
        let mallory = Some(1001);
        for i in 0..100 {
            l.bound(&m, "gen_ai_tool_name", &format!("junk{i}"), mallory);
        }
        assert_eq!(l.bound(&m, "gen_ai_tool_name", "junk200", mallory), OVERFLOW_VALUE);
        // Root's new tool still has its own name.
        assert_eq!(l.bound(&m, "gen_ai_tool_name", "secret_exfil", Some(0)), "secret_exfil");
        // Long values are cut, distinctly.
        let long = l.bound(&m, "mcp_server_name", &"s".repeat(10_000), Some(0));
        assert!(long.len() <= MAX_LABEL_BYTES + 11, "{}", long.len());
        // Label sets, per user too.
        let set = |n: usize| vec![format!("t{n}"), "c".to_string()];
        for n in 0..3 * SERIES_PER_VALUE {
            assert!(l.new_series(&m, mallory, &set(n)));
        }
        assert!(!l.new_series(&m, mallory, &set(1000)));
        assert!(l.new_series(&m, mallory, &set(0)), "a set seen before stays");
        assert!(l.new_series(&m, Some(0), &set(1000)));
    }

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.session_started(Transport::Pipe);
        let text = m.render();
        for name in [
            "mcp_active_sessions",
            "mcptap_build_info",
            "mcptap_capture_chunks_total",
            "mcptap_tracked_processes",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}

//! `dialcore test-call`: runs a SIP loopback test of an agent against a running service,
//! through its REST API, and prints how the calls went.
//!
//! 1. Asks the service without consent: its 400 `consent_required` carries the estimated
//!    cost, which is printed.
//! 2. Creates one run (`--runs 1`) or a batch, now with `consent_to_charge: true`.
//! 3. Polls the run or batch with a progress bar until every run is over.
//! 4. Prints a table of the measurements (and the batch aggregate).
//!
//! The exit status is 0 when every run completed and held its thresholds, 1 when one failed
//! or missed a threshold (or the wait timed out), 2 when the service refused the request.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

/// The scenario of a run given no `--scenario`: free text, so the bot runs its default
/// script (waits for the greeting, speaks, waits for the reply, hangs up).
pub const DEFAULT_SCENARIO: &str = "Hello, I would like to know your opening hours.";

/// How often the run or batch is read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Timeout of one HTTP request to the service.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable holding the API key when `--api-key` is not given.
pub const API_KEY_ENV: &str = "DIALCORE_API_KEY";

/// Arguments of `dialcore test-call`.
#[derive(Debug, Clone, Args)]
pub struct TestCallArgs {
    /// The agent to test (`agt_...`).
    #[arg(long, value_name = "ID")]
    pub agent: String,
    /// `sip`: both legs over real SIP and RTP on loopback; `bot`: in-process, no SIP.
    #[arg(long, default_value = "sip", value_parser = ["sip", "bot"])]
    pub mode: String,
    /// `outbound`: the agent calls the test bot; `inbound`: the bot calls the agent.
    #[arg(long, default_value = "outbound", value_parser = ["outbound", "inbound"])]
    pub direction: String,
    /// Runs in parallel (1-20); more than one makes a batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// Seconds between the starts of a batch's runs (0-60).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60))]
    pub stagger: u32,
    /// File holding the scenario: a bot script (`say ...`, `dtmf 123`, `wait 2s`,
    /// `expect_speech`, `hangup`) or free text (runs the default script).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Impairment the bot applies to its media.
    #[arg(long, default_value = "clean",
          value_parser = ["clean", "lossy", "jittery", "bad_mobile"])]
    pub network_profile: String,
    /// A pass/fail gate, e.g. `response_latency_p95_ms=800` or `mos_min=3.5` (repeatable).
    #[arg(long = "threshold", value_name = "NAME=VALUE", value_parser = parse_threshold)]
    pub thresholds: Vec<(String, f64)>,
    /// Base URL of the service's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (default: the DIALCORE_API_KEY environment variable).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Longest wait for the runs to end, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
}

/// The run(s) to create, as the API wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Path under the API base: `/test-calls` or `/test-call-batches`.
    pub path: &'static str,
    /// The JSON body.
    pub body: Value,
}

/// Builds the create request for `args` with `scenario` as the scenario prompt.
pub fn create_request(args: &TestCallArgs, scenario: &str, consent: bool) -> CreateRequest {
    let mut body = json!({
        "target_type": "agent",
        "target_id": args.agent,
        "direction": args.direction,
        "mode": args.mode,
        "network_profile": args.network_profile,
        "scenario_prompt": scenario,
        "consent_to_charge": consent,
    });
    if !args.thresholds.is_empty() {
        let gates: Map<String, Value> = args
            .thresholds
            .iter()
            .map(|(name, limit)| (name.clone(), json!(limit)))
            .collect();
        body["thresholds"] = Value::Object(gates);
    }
    if args.runs > 1 {
        body["run_count"] = json!(args.runs);
        body["stagger_seconds"] = json!(args.stagger);
        CreateRequest {
            path: "/test-call-batches",
            body,
        }
    } else {
        CreateRequest {
            path: "/test-calls",
            body,
        }
    }
}

/// Parses `NAME=VALUE` of `--threshold`.
pub fn parse_threshold(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    Ok((name.trim().to_owned(), value))
}

/// The message of an API error body: `code: message` (plus the fields of a validation error).
pub fn api_error_message(status: u16, body: &Value) -> String {
    let error = &body["error"];
    let Some(code) = error["code"].as_str() else {
        return format!("HTTP {status}: {body}");
    };
    let mut text = format!(
        "HTTP {status} {code}: {}",
        error["message"].as_str().unwrap_or("")
    );
    if let Some(fields) = error["details"]["fields"].as_object() {
        for (field, problem) in fields {
            let _ = write!(text, "\n  {field}: {}", problem.as_str().unwrap_or(""));
        }
    }
    text
}

/// Whether a run or batch status is final.
pub fn is_over(status: &str) -> bool {
    matches!(status, "completed" | "failed")
}

/// Whether a run completed and held every threshold it carried.
pub fn run_passed(run: &Value) -> bool {
    run["status"] == "completed" && run["measurements"]["passed"] != Value::Bool(false)
}

/// The summary table: one line per run with its status and main measurements, then the
/// error or the failed thresholds of the runs that have them.
pub fn summary_table(runs: &[Value]) -> String {
    const HEADERS: [&str; 8] = [
        "run",
        "status",
        "latency p50 ms",
        "latency p95 ms",
        "MOS",
        "dead air ms",
        "loss %",
        "passed",
    ];
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|run| {
            let m = &run["measurements"];
            [
                text(&run["id"]),
                text(&run["status"]),
                number(&m["response_latency_ms"]["p50"], 0),
                number(&m["response_latency_ms"]["p95"], 0),
                number(&m["mos"], 2),
                number(&m["dead_air_ms_max"], 0),
                number(&m["loss_percent"], 2),
                match (run["status"].as_str(), &m["passed"]) {
                    (Some("completed"), Value::Bool(true)) => "yes".into(),
                    (Some("completed"), Value::Bool(false)) => "NO".into(),
                    (Some("failed"), _) => "NO".into(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(index, (cell, width))| {
                if index < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(String::from));
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    line(&mut out, &rule);
    for row in &rows {
        line(&mut out, row);
    }
    for run in runs {
        if let Some(error) = run["error_message"].as_str() {
            let _ = writeln!(out, "{}: {error}", text(&run["id"]));
        }
        if let Some(failed) = run["measurements"]["failed_thresholds"].as_array() {
            if !failed.is_empty() {
                let names: Vec<String> = failed.iter().map(failed_threshold).collect();
                let _ = writeln!(
                    out,
                    "{}: thresholds not held: {}",
                    text(&run["id"]),
                    names.join(", ")
                );
            }
        }
    }
    out
}

/// What a batch adds to the summary: why it failed, when it did, then its aggregate.
pub fn batch_lines(batch: &Value) -> String {
    let mut out = String::new();
    if let Some(why) = batch["error_message"].as_str() {
        let _ = writeln!(out, "\nBatch {} failed: {why}", text(&batch["id"]));
    }
    if batch["aggregate"].is_object() {
        let _ = write!(
            out,
            "\nBatch aggregate:\n{}\n",
            aggregate_lines(&batch["aggregate"])
        );
    }
    out
}

/// The batch aggregate, one measure a line (`name: median ..., p95 ...` for distributions);
/// a group of distributions (such as `measures`) shows each of its members.
pub fn aggregate_lines(aggregate: &Value) -> String {
    let mut out = String::new();
    if let Some(measures) = aggregate.as_object() {
        aggregate_into(&mut out, measures, 0);
    }
    out
}

fn aggregate_into(out: &mut String, measures: &Map<String, Value>, depth: usize) {
    for (name, value) in measures {
        let shown = match value {
            Value::Object(stats) => {
                let parts: Vec<String> = stats
                    .iter()
                    .filter(|(_, v)| !v.is_object() && !v.is_array())
                    .map(|(key, v)| format!("{key} {}", number_or_text(v)))
                    .collect();
                if parts.is_empty() {
                    if depth == 0 {
                        aggregate_into(out, stats, depth + 1);
                    }
                    continue;
                }
                parts.join(", ")
            }
            Value::Array(_) => continue,
            other => number_or_text(other),
        };
        let _ = writeln!(out, "  {name}: {shown}");
    }
}

/// The exit status for runs that are over: success only when every run passed.
pub fn exit_code(runs: &[Value]) -> ExitCode {
    if !runs.is_empty() && runs.iter().all(run_passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn failed_threshold(value: &Value) -> String {
    match value {
        Value::String(name) => name.clone(),
        Value::Object(fields) => {
            let name = fields.get("name").map(text).unwrap_or_else(|| "?".into());
            match (fields.get("limit"), fields.get("actual")) {
                (Some(limit), Some(actual)) => format!(
                    "{name} (limit {}, actual {})",
                    number_or_text(limit),
                    number_or_text(actual)
                ),
                _ => name,
            }
        }
        other => other.to_string(),
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "-".into())
}

fn number(value: &Value, decimals: usize) -> String {
    value
        .as_f64()
        .map(|n| format!("{n:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

fn number_or_text(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            Some(f) if f.abs() < 1e15 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Runs the command: returns the exit status, or an error for what is not a test result
/// (unreadable scenario, unreachable service, refused request).
pub async fn run(args: TestCallArgs) -> anyhow::Result<ExitCode> {
    let key = match &args.api_key {
        Some(key) => key.clone(),
        None => std::env::var(API_KEY_ENV)
            .with_context(|| format!("give --api-key or set {API_KEY_ENV}"))?,
    };
    let scenario = match &args.scenario {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the scenario file {}", path.display()))?,
        None => DEFAULT_SCENARIO.to_owned(),
    };
    let api = Api::new(&args.url, key)?;

    // The service prices the request before anyone consents.
    let ask = create_request(&args, &scenario, false);
    let (status, body) = api.post(ask.path, &ask.body).await?;
    if status != 400 || body["error"]["code"] != "consent_required" {
        anyhow::bail!("{}", api_error_message(status, &body));
    }
    let estimate = body["error"]["details"]["estimated_cost_cents"]
        .as_i64()
        .unwrap_or_default();
    println!(
        "Testing agent {} with {} {} run(s), {} mode, {} network: estimated cost {} cents \
         (charged by the real duration).",
        args.agent, args.runs, args.direction, args.mode, args.network_profile, estimate
    );

    let create = create_request(&args, &scenario, true);
    let (status, body) = api.post(create.path, &create.body).await?;
    if status != 201 {
        anyhow::bail!("{}", api_error_message(status, &body));
    }
    let created = &body["data"];
    let id = created["id"]
        .as_str()
        .context("the service answered without an id")?
        .to_owned();
    println!("Created {id}.");

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let (runs, batch) = if args.runs > 1 {
        let batch = wait_batch(&api, &id, args.runs, deadline).await?;
        let runs = batch_runs(&api, &batch).await?;
        (runs, Some(batch))
    } else {
        (vec![wait_run(&api, &id, deadline).await?], None)
    };

    print!("\n{}", summary_table(&runs));
    if let Some(batch) = &batch {
        print!("{}", batch_lines(batch));
    }
    if runs
        .iter()
        .any(|run| !is_over(run["status"].as_str().unwrap_or("")))
    {
        eprintln!(
            "Timed out after {} s; the runs go on in the service.",
            args.timeout
        );
        return Ok(ExitCode::from(1));
    }
    Ok(exit_code(&runs))
}

/// Polls a run until it is over or the deadline passes; returns it as last read.
async fn wait_run(api: &Api, id: &str, deadline: Instant) -> anyhow::Result<Value> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    loop {
        let run = api.get_data(&format!("/test-calls/{id}")).await?;
        let status = run["status"].as_str().unwrap_or("").to_owned();
        spinner.set_message(format!("{id}: {status}"));
        if is_over(&status) || Instant::now() >= deadline {
            spinner.finish_with_message(format!("{id}: {status}"));
            return Ok(run);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls a batch until it is over or the deadline passes; returns it as last read.
async fn wait_batch(api: &Api, id: &str, total: u32, deadline: Instant) -> anyhow::Result<Value> {
    let bar = ProgressBar::new(u64::from(total));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs over {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let batch = api.get_data(&format!("/test-call-batches/{id}")).await?;
        let completed = batch["completed_runs"].as_u64().unwrap_or(0);
        let failed = batch["failed_runs"].as_u64().unwrap_or(0);
        bar.set_position(completed + failed);
        bar.set_message(format!("({failed} failed)"));
        let status = batch["status"].as_str().unwrap_or("");
        if is_over(status) || Instant::now() >= deadline {
            bar.finish();
            return Ok(batch);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The runs of a batch, in the batch's `run_ids` order.
async fn batch_runs(api: &Api, batch: &Value) -> anyhow::Result<Vec<Value>> {
    let id = batch["id"].as_str().unwrap_or("");
    let page = api
        .get_data(&format!("/test-calls?batch_id={id}&limit=200"))
        .await?;
    let mut runs = page.as_array().cloned().unwrap_or_default();
    let order: Vec<&str> = batch["run_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    runs.sort_by_key(|run| {
        order
            .iter()
            .position(|id| run["id"] == **id)
            .unwrap_or(usize::MAX)
    });
    Ok(runs)
}

/// The service's REST API.
struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(url: &str, key: String) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api {
            client,
            base: format!("{}/api/public/v1", url.trim_end_matches('/')),
            key,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {}", self.base))?;
        read(response).await
    }

    /// `data` of a successful GET; an error response is an error naming its code.
    async fn get_data(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {}", self.base))?;
        let (status, mut body) = read(response).await?;
        if status != 200 {
            anyhow::bail!("{}", api_error_message(status, &body));
        }
        Ok(body["data"].take())
    }
}

async fn read(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .context("the service's answer broke off")?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TestCallArgs,
    }

    fn args(extra: &[&str]) -> TestCallArgs {
        let mut argv = vec!["test-call", "--agent", "agt_1"];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn a_failed_batch_says_why() {
        let failed = json!({"id": "tcb_1", "status": "failed", "aggregate": null,
                            "error_message": "service_restart: the service restarted"});
        assert_eq!(
            batch_lines(&failed),
            "\nBatch tcb_1 failed: service_restart: the service restarted\n"
        );
        let done = json!({"id": "tcb_2", "status": "completed", "error_message": null,
                          "aggregate": {"runs": 2}});
        assert_eq!(batch_lines(&done), "\nBatch aggregate:\n  runs: 2\n\n");
    }

    #[test]
    fn one_run_is_a_test_call_with_defaults() {
        let request = create_request(&args(&[]), DEFAULT_SCENARIO, false);
        assert_eq!(request.path, "/test-calls");
        assert_eq!(
            request.body,
            json!({
                "target_type": "agent", "target_id": "agt_1", "direction": "outbound",
                "mode": "sip", "network_profile": "clean", "scenario_prompt": DEFAULT_SCENARIO,
                "consent_to_charge": false,
            })
        );
    }

    #[test]
    fn several_runs_make_a_batch_with_thresholds() {
        let parsed = args(&[
            "--runs",
            "5",
            "--stagger",
            "2",
            "--mode",
            "bot",
            "--direction",
            "inbound",
            "--network-profile",
            "lossy",
            "--threshold",
            "mos_min=3.5",
            "--threshold",
            "response_latency_p95_ms = 800",
        ]);
        let request = create_request(&parsed, "say hi\nhangup", true);
        assert_eq!(request.path, "/test-call-batches");
        assert_eq!(request.body["run_count"], json!(5));
        assert_eq!(request.body["stagger_seconds"], json!(2));
        assert_eq!(request.body["mode"], json!("bot"));
        assert_eq!(request.body["direction"], json!("inbound"));
        assert_eq!(request.body["network_profile"], json!("lossy"));
        assert_eq!(request.body["consent_to_charge"], json!(true));
        assert_eq!(
            request.body["thresholds"],
            json!({"mos_min": 3.5, "response_latency_p95_ms": 800.0})
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--runs", "0"][..],
            &["--runs", "21"],
            &["--mode", "carrier"],
            &["--direction", "sideways"],
            &["--network-profile", "moon"],
            &["--stagger", "61"],
            &["--threshold", "mos_min"],
            &["--threshold", "mos_min=high"],
        ] {
            let mut argv = vec!["test-call", "--agent", "agt_1"];
            argv.extend_from_slice(bad);
            assert!(Wrapper::try_parse_from(argv).is_err(), "{bad:?}");
        }
        assert!(
            Wrapper::try_parse_from(["test-call"]).is_err(),
            "--agent is required"
        );
    }

    #[test]
    fn api_errors_show_code_message_and_fields() {
        let body = json!({"error": {"code": "validation_error", "message": "the request has invalid fields",
            "details": {"fields": {"run_count": "must be an integer from 1 to 20"}}}});
        assert_eq!(
            api_error_message(422, &body),
            "HTTP 422 validation_error: the request has invalid fields\n  run_count: must be an integer from 1 to 20"
        );
        assert_eq!(
            api_error_message(502, &json!("bad gateway")),
            "HTTP 502: \"bad gateway\""
        );
    }

    fn completed(id: &str, p50: f64, mos: f64, passed: Option<bool>) -> Value {
        let mut measurements = json!({
            "response_latency_ms": {"p50": p50, "p95": p50 * 1.5, "max": p50 * 2.0},
            "mos": mos, "dead_air_ms_max": 400, "loss_percent": 0.0, "one_way_audio": false,
        });
        if let Some(passed) = passed {
            measurements["passed"] = json!(passed);
            measurements["failed_thresholds"] = if passed {
                json!([])
            } else {
                json!([{"name": "mos_min", "limit": 4.0, "actual": mos}])
            };
        }
        json!({"id": id, "status": "completed", "measurements": measurements})
    }

    #[test]
    fn table_lines_up_and_reports_failures() {
        let runs = vec![
            completed("tcr_a", 120.0, 4.31, Some(true)),
            completed("tcr_b", 95.5, 3.2, Some(false)),
            json!({"id": "tcr_c", "status": "failed", "measurements": null,
                   "error_message": "test_bot: no answer within 30 s"}),
        ];
        let table = summary_table(&runs);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("run    status     latency p50 ms"),
            "{table}"
        );
        assert!(lines[1].starts_with("-----  ---------  "), "{table}");
        assert!(lines[2].contains("tcr_a  completed"), "{table}");
        assert!(lines[2].contains("120") && lines[2].contains("180") && lines[2].contains("4.31"));
        assert!(lines[2].ends_with("yes"), "{table}");
        assert!(lines[3].ends_with("NO"), "{table}");
        assert!(lines[4].starts_with("tcr_c  failed") && lines[4].ends_with("NO"));
        // Every row is as wide as the header row's columns.
        let header_passed = lines[0].find("passed").expect("column");
        assert_eq!(lines[2].len(), header_passed + "passed".len());
        assert!(table.contains("tcr_c: test_bot: no answer within 30 s"));
        assert!(table.contains("tcr_b: thresholds not held: mos_min (limit 4, actual 3.20)"));
    }

    #[test]
    fn exit_code_needs_every_run_passed() {
        let good = completed("tcr_a", 100.0, 4.3, None);
        assert!(run_passed(&good), "no thresholds: completed is passed");
        assert_eq!(exit_code(std::slice::from_ref(&good)), ExitCode::SUCCESS);
        let missed = completed("tcr_b", 100.0, 3.0, Some(false));
        assert!(!run_passed(&missed));
        assert_eq!(exit_code(&[good.clone(), missed]), ExitCode::from(1));
        let failed = json!({"id": "tcr_c", "status": "failed"});
        assert_eq!(exit_code(&[good, failed]), ExitCode::from(1));
        assert_eq!(exit_code(&[]), ExitCode::from(1));
    }

    #[test]
    fn aggregate_shows_distributions_and_values() {
        let aggregate = json!({
            "measures": {
                "response_latency_ms": {"median": 110.5, "p95": 180, "runs": 10},
                "mos": {"median": 4.3, "p95": 4.1},
            },
            "passed": true,
            "runs": 10,
            "dtmf_heard": ["1"],
        });
        let lines = aggregate_lines(&aggregate);
        assert!(lines.contains("  response_latency_ms: median 110.50, p95 180, runs 10"));
        assert!(lines.contains("  mos: median 4.30, p95 4.10"));
        assert!(lines.contains("  passed: true"));
        assert!(!lines.contains("dtmf_heard"));
        assert_eq!(aggregate_lines(&Value::Null), "");
    }

    #[test]
    fn thresholds_parse_name_and_value() {
        assert_eq!(
            parse_threshold("mos_min=3.5"),
            Ok(("mos_min".to_owned(), 3.5))
        );
        assert!(parse_threshold("=").is_err());
        assert!(parse_threshold("mos_min").is_err());
    }
}

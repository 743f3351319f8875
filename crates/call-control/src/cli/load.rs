//! `dialcore load`: places (or answers) many calls with real speech over SIP
//! and RTP and reports how each went; see the `load-gen` crate.
//!
//! The exit status is 0 when every call was answered and every threshold
//! held, 1 when a call failed or a threshold was missed, 2 when the run could
//! not start (bad arguments, a port in use).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bot_loopback::NetworkProfile;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use load_gen::{LoadCodec, LoadConfig, Profile, Progress, Threshold};

/// How often the progress bar is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Arguments of `dialcore load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Whom to call, e.g. `sip:+15550001111@127.0.0.1:5060` (not with `--answer`).
    #[arg(value_name = "SIP_URI", required_unless_present = "answer")]
    pub target: Option<String>,
    /// Calls to place (or, with `--answer`, to answer before stopping).
    #[arg(long, default_value_t = 10)]
    pub calls: u64,
    /// New calls per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long each call is held before the generator hangs up (`30s`, `500ms`, `2m`).
    /// With `--answer` the default is to hold until the caller hangs up.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hold: Option<Duration>,
    /// The codec offered (and accepted when answering).
    #[arg(long, default_value = "pcmu", value_parser = ["pcmu", "pcma", "opus"])]
    pub codec: String,
    /// WAV file (16-bit PCM) to send instead of the shipped speech.
    #[arg(long, value_name = "FILE")]
    pub audio: Option<PathBuf>,
    /// SIP over TCP.
    #[arg(long)]
    pub tcp: bool,
    /// Arrival profile: `soak` (steady rate), `ramp` (up to the rate over 10 s), `spike`
    /// (the second half of the calls ten times faster).
    #[arg(long, default_value = "soak", value_parser = ["soak", "ramp", "spike"])]
    pub profile: String,
    /// Impairment applied to the RTP the generator sends.
    #[arg(long, default_value = "clean",
          value_parser = ["clean", "lossy", "jittery", "bad_mobile"])]
    pub network_profile: String,
    /// Limit the run is judged by, `name=value` (repeatable): loss_percent, jitter_p99_ms,
    /// deviation_p99_ms, setup_p99_ms, ringing_p99_ms, echo_rtt_p99_ms, failed_calls,
    /// failed_percent, one_way_calls.
    #[arg(long = "threshold", value_name = "NAME=VALUE")]
    pub thresholds: Vec<Threshold>,
    /// Print the whole report (summary, thresholds, timeline, every call) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Answer calls instead of placing them (to load-test outbound calling).
    #[arg(long, requires = "listen")]
    pub answer: bool,
    /// Where to listen for SIP with `--answer` (UDP and TCP), e.g. `127.0.0.1:5070`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Local address for SIP and RTP (default: loopback for a loopback target).
    #[arg(long, value_name = "IP")]
    pub local_ip: Option<IpAddr>,
    /// Media shards (default: one per core).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
}

/// `30s`, `500ms`, `2m`, `1.5s`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("{text:?} is not a duration (e.g. 30s, 500ms, 2m)"))
}

impl LoadArgs {
    fn config(self) -> anyhow::Result<LoadConfig> {
        let codec: LoadCodec = self.codec.parse()?;
        let profile: Profile = self.profile.parse()?;
        let network: NetworkProfile = self.network_profile.parse()?;
        Ok(LoadConfig {
            target: self.target.unwrap_or_default(),
            calls: self.calls,
            rate: self.rate,
            hold: self.hold,
            codec,
            audio: self.audio,
            tcp: self.tcp,
            profile,
            network: network.netsim_config(),
            thresholds: self.thresholds,
            answer_on: if self.answer { self.listen } else { None },
            local_ip: self.local_ip,
            shards: self.shards,
        })
    }
}

/// Runs the load and prints the report.
pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let config = args.config()?;
    let calls = config.calls;
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new(calls);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} over  {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let shown = progress.clone();
    let shown_bar = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
        loop {
            interval.tick().await;
            shown_bar.set_position(shown.finished.load(Ordering::Relaxed));
            shown_bar.set_message(format!(
                "live {}  answered {}  failed {}",
                shown.live(),
                shown.answered.load(Ordering::Relaxed),
                shown.failed.load(Ordering::Relaxed)
            ));
        }
    });
    let result = load_gen::run(config, progress).await;
    ticker.abort();
    bar.finish_and_clear();
    let report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

//! The measurements of a run, from the brain's timeline and the leg's
//! SIP timings and RTP statistics.

use media::stats::{CodecQuality, EModel};

use crate::brain::BrainReport;
use crate::measure::{LatencySummary, Measurements, Party, DEAD_AIR_THRESHOLD_MS};
use crate::netprofile::NetworkProfile;

/// RTP figures of the bot's leg.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LinkStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_dropped_outbound: u64,
    pub loss_percent: f64,
    pub jitter_ms: f64,
    pub mos: f64,
}

/// SIP delays of the bot's leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SipTimes {
    pub post_dial_delay_ms: Option<u64>,
    pub answer_delay_ms: Option<u64>,
}

/// Builds the measurements from the brain's report and the leg's figures.
pub(crate) fn assemble(
    brain: &BrainReport,
    link: &LinkStats,
    sip: SipTimes,
    hangup_by: Party,
    profile: NetworkProfile,
) -> Measurements {
    let timeline = &brain.timeline;
    let latencies = timeline.response_latencies();
    let as_f64: Vec<f64> = latencies.iter().map(|&v| v as f64).collect();
    let (dead_air_ms_max, dead_air_count) = timeline.dead_air(DEAD_AIR_THRESHOLD_MS);
    let (barge_in_attempts, barge_in_stopped, barge_in_stop_ms) = timeline.barge_ins();
    let spoke = !timeline.bot_speech.is_empty();
    let heard = !timeline.agent_speech.is_empty();
    let one_way_audio = (spoke && !heard) || (link.packets_sent > 0 && link.packets_received == 0);
    Measurements {
        response_latency_ms: LatencySummary::of(&as_f64),
        response_latencies_ms: latencies,
        dead_air_ms_max,
        dead_air_count,
        one_way_audio,
        mos: link.mos,
        post_dial_delay_ms: sip.post_dial_delay_ms,
        answer_delay_ms: sip.answer_delay_ms,
        time_to_first_agent_audio_ms: timeline.first_agent_audio_ms(),
        barge_in_stop_ms,
        barge_in_attempts,
        barge_in_stopped,
        packets_sent: link.packets_sent,
        packets_received: link.packets_received,
        packets_lost: link.packets_lost,
        packets_dropped_outbound: link.packets_dropped_outbound,
        loss_percent: link.loss_percent,
        jitter_ms: link.jitter_ms,
        dtmf_sent: brain.dtmf_sent.clone(),
        dtmf_heard: brain.dtmf_heard.clone(),
        hangup_by,
        duration_ms: timeline.duration_ms,
        utterances: u32::try_from(timeline.bot_speech.len()).unwrap_or(u32::MAX),
        expect_timeouts: brain.expect_timeouts,
        network_profile: profile,
    }
}

/// The MOS of a lossless, undelayed PCM path (the in-process `bot` mode).
pub(crate) fn lossless_mos() -> f64 {
    EModel::new(CodecQuality::PCMU).mos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Span, Utterance};

    fn brain(bot: bool, agent: bool) -> BrainReport {
        let mut report = BrainReport::default();
        report.timeline.duration_ms = 5000;
        if bot {
            report.timeline.bot_speech.push(Utterance {
                span: Span::new(1000, 2000),
                barge_in: false,
            });
        }
        if agent {
            report.timeline.agent_speech.push(Span::new(2300, 3000));
        }
        report
    }

    fn link(received: u64) -> LinkStats {
        LinkStats {
            packets_sent: 250,
            packets_received: received,
            mos: 4.3,
            ..LinkStats::default()
        }
    }

    #[test]
    fn a_reply_heard_is_two_way_audio_with_its_latency() {
        let m = assemble(
            &brain(true, true),
            &link(250),
            SipTimes::default(),
            Party::Bot,
            NetworkProfile::Clean,
        );
        assert!(!m.one_way_audio);
        assert_eq!(m.response_latencies_ms, [300]);
        assert_eq!(m.time_to_first_agent_audio_ms, Some(2300));
        assert_eq!(m.utterances, 1);
        assert_eq!(m.duration_ms, 5000);
    }

    #[test]
    fn one_way_audio_is_silence_back_or_no_rtp_back() {
        let silent = assemble(
            &brain(true, false),
            &link(250),
            SipTimes::default(),
            Party::Bot,
            NetworkProfile::Clean,
        );
        assert!(silent.one_way_audio, "spoke, heard no voice");
        assert_eq!(silent.response_latency_ms, None);
        let no_rtp = assemble(
            &brain(false, false),
            &link(0),
            SipTimes::default(),
            Party::Bot,
            NetworkProfile::Clean,
        );
        assert!(no_rtp.one_way_audio, "sent RTP, got none");
        let quiet_call = assemble(
            &brain(false, false),
            &link(250),
            SipTimes::default(),
            Party::Bot,
            NetworkProfile::Clean,
        );
        assert!(!quiet_call.one_way_audio, "nobody spoke, RTP both ways");
    }

    #[test]
    fn a_lossless_path_rates_near_the_top_of_the_scale() {
        let mos = lossless_mos();
        assert!((4.3..=4.5).contains(&mos), "{mos}");
    }
}

//! Voice activity detection on 20 ms frames, for what the bot hears.
//!
//! Energy based: a frame is voiced when its level is at least
//! [`VadConfig::margin_db`] above an adaptive noise floor and above an
//! absolute minimum. The floor starts at the first frame's level, follows
//! quieter frames at once and creeps up slowly otherwise (the pauses
//! between words pull it back down), so steady noise is learned and
//! speech is not. A
//! segment starts after [`VadConfig::onset_frames`] voiced frames in a row
//! (its start is the first of them) and ends after
//! [`VadConfig::hangover_frames`] unvoiced ones (its end is the last voiced
//! frame's end), so the short pauses inside speech do not split it.

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Level above the noise floor for a voiced frame (dB).
    pub margin_db: f64,
    /// Minimum level of a voiced frame (dBFS).
    pub min_level_dbfs: f64,
    /// Voiced frames in a row that start a segment.
    pub onset_frames: u32,
    /// Unvoiced frames in a row that end a segment.
    pub hangover_frames: u32,
    /// How fast the floor rises per frame (dB).
    pub floor_rise_db: f64,
}

impl Default for VadConfig {
    /// 12 dB over the floor, at least -50 dBFS, 40 ms onset, 300 ms hangover.
    fn default() -> Self {
        VadConfig {
            margin_db: 12.0,
            min_level_dbfs: -50.0,
            onset_frames: 2,
            hangover_frames: 15,
            floor_rise_db: 0.1,
        }
    }
}

/// A change of voice activity, in frame numbers (frame 0 is the first pushed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Voice started at this frame.
    Onset(u64),
    /// Voice ended before this frame (the last voiced frame is `end - 1`).
    Offset(u64),
}

/// The detector's state.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    floor_db: Option<f64>,
    frame: u64,
    run: u32,
    run_start: u64,
    in_speech: bool,
    quiet: u32,
    last_voiced: u64,
}

/// Quietest level considered (digital silence).
const SILENCE_DBFS: f64 = -96.0;

impl Vad {
    /// A detector with `config`.
    pub fn new(config: VadConfig) -> Vad {
        Vad {
            config,
            floor_db: None,
            frame: 0,
            run: 0,
            run_start: 0,
            in_speech: false,
            quiet: 0,
            last_voiced: 0,
        }
    }

    /// Whether a segment is open.
    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.frame
    }

    /// The current noise floor (dBFS), once a frame was pushed.
    pub fn floor_dbfs(&self) -> Option<f64> {
        self.floor_db
    }

    /// Takes the next frame; returns a change of activity, if any.
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        let level = level_dbfs(frame);
        let index = self.frame;
        self.frame += 1;
        let floor = match self.floor_db {
            Some(floor) if level >= floor => floor + self.config.floor_rise_db,
            _ => level,
        };
        self.floor_db = Some(floor);
        let voiced = level >= self.config.min_level_dbfs && level >= floor + self.config.margin_db;
        if voiced {
            self.last_voiced = index;
            self.quiet = 0;
            if self.run == 0 {
                self.run_start = index;
            }
            self.run += 1;
            if !self.in_speech && self.run >= self.config.onset_frames {
                self.in_speech = true;
                return Some(VadEvent::Onset(self.run_start));
            }
            None
        } else {
            self.run = 0;
            if self.in_speech {
                self.quiet += 1;
                if self.quiet >= self.config.hangover_frames {
                    self.in_speech = false;
                    return Some(VadEvent::Offset(self.last_voiced + 1));
                }
            }
            None
        }
    }

    /// Closes an open segment (end of call): its end, if one was open.
    pub fn finish(&mut self) -> Option<VadEvent> {
        if self.in_speech {
            self.in_speech = false;
            Some(VadEvent::Offset(self.last_voiced + 1))
        } else {
            None
        }
    }
}

/// RMS level of a frame in dBFS.
pub fn level_dbfs(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return SILENCE_DBFS;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s).powi(2)).sum();
    let rms = (sum / frame.len() as f64).sqrt();
    if rms < 1.0 {
        SILENCE_DBFS
    } else {
        20.0 * (rms / 32768.0).log10()
    }
}

#[cfg(test)]
mod tests {
    use media::codec::SampleRate;

    use super::*;
    use crate::speech::Library;

    const FRAME: usize = 160;

    fn run(vad: &mut Vad, signal: &[i16]) -> Vec<VadEvent> {
        signal
            .chunks(FRAME)
            .filter(|c| c.len() == FRAME)
            .filter_map(|c| vad.push(c))
            .collect()
    }

    fn noise(frames: usize, amplitude: f64, seed: u64) -> Vec<i16> {
        let mut state = seed;
        (0..frames * FRAME)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let uniform = (state >> 33) as f64 / (1u64 << 31) as f64 - 0.5;
                (uniform * 2.0 * amplitude) as i16
            })
            .collect()
    }

    #[test]
    fn silence_and_steady_noise_are_not_speech() {
        let mut vad = Vad::new(VadConfig::default());
        assert!(run(&mut vad, &vec![0; 100 * FRAME]).is_empty());
        // Noise around -40 dBFS: above the absolute minimum, learned as floor.
        let mut vad = Vad::new(VadConfig::default());
        let events = run(&mut vad, &noise(500, 600.0, 7));
        assert!(
            events.len() <= 2,
            "at most one false segment at the start: {events:?}"
        );
        assert!(!vad.in_speech(), "the floor has learned the noise");
    }

    #[test]
    fn shipped_speech_is_one_segment_with_its_edges_found() {
        let library = Library::at(SampleRate::Hz8000).expect("clips");
        let speech = library.say("Hello, I would like to check the status of my order.");
        let lead = 50usize;
        let mut signal = noise(lead, 30.0, 1);
        signal.extend_from_slice(&speech);
        signal.extend(noise(60, 30.0, 2));
        let mut vad = Vad::new(VadConfig::default());
        let events = run(&mut vad, &signal);
        let speech_frames = speech.len().div_ceil(FRAME) as u64;
        assert_eq!(events.len(), 2, "{events:?}");
        let VadEvent::Onset(start) = events[0] else {
            panic!("onset first: {events:?}")
        };
        let VadEvent::Offset(end) = events[1] else {
            panic!("offset second: {events:?}")
        };
        assert!(
            (lead as u64..lead as u64 + 5).contains(&start),
            "onset {start} near {lead}"
        );
        let expected_end = lead as u64 + speech_frames;
        assert!(
            end + 5 >= expected_end && end <= expected_end + 1,
            "offset {end} near {expected_end}"
        );
    }

    #[test]
    fn speech_over_noise_is_found_and_finish_closes_a_segment() {
        let library = Library::at(SampleRate::Hz8000).expect("clips");
        let mut signal = noise(100, 500.0, 3);
        let speech = library.say("Can you repeat that, please?");
        let start = signal.len();
        for (i, s) in speech.iter().enumerate() {
            signal.push(s.saturating_add(noise(1, 500.0, i as u64)[0]));
        }
        let mut vad = Vad::new(VadConfig::default());
        let events = run(&mut vad, &signal);
        assert!(
            events.contains(&VadEvent::Onset((start / FRAME) as u64))
                || events.iter().any(
                    |e| matches!(e, VadEvent::Onset(f) if f.abs_diff((start / FRAME) as u64) <= 3)
                ),
            "{events:?}"
        );
        assert!(vad.in_speech(), "still talking at the end of the signal");
        assert!(matches!(vad.finish(), Some(VadEvent::Offset(_))));
        assert_eq!(vad.finish(), None);
    }
}

//! Stereo WAV recording of a call: caller on the left channel, agent on the
//! right, 16-bit PCM at 8 or 16 kHz.
//!
//! Two layers:
//!
//! - [`Recorder`] is the synchronous core. Each [`Recorder::write_frame`]
//!   call is one 20 ms tick and takes the frame of each side, or `None` for a
//!   side that had nothing this tick (written as silence, so the channels
//!   stay aligned). Writes land in a 64 KiB buffer (about a second of audio
//!   at 16 kHz) and reach the file with one `write` per buffer-full: **this
//!   is blocking file I/O**, so do not drive a `Recorder` from an async task
//!   that shares its thread with other calls' audio.
//! - [`RecordingWriter`] is one dedicated OS thread that owns any number of
//!   recordings. [`RecordingWriter::open`] hands back a [`RecordingHandle`]
//!   whose [`write_frame`](RecordingHandle::write_frame) only copies the
//!   samples into a batch and, once a second, passes the batch to the thread
//!   with a non-blocking `try_send`: safe to call from the audio path of a
//!   tokio task. [`RecordingHandle::finish`] flushes, finalizes the WAV
//!   header and reports the outcome.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use hound::{SampleFormat, WavSpec, WavWriter};
use tokio::sync::oneshot;

use crate::codec::SampleRate;

/// Errors of the record module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Recordings are made at 8 or 16 kHz.
    #[error("recording at {0} Hz is not supported (8000 or 16000)")]
    UnsupportedRate(u32),
    /// A side gave more samples than one 20 ms frame.
    #[error("frame of {actual} samples, at most {max} per 20 ms")]
    FrameTooLong {
        /// Samples in one frame at the recording's rate.
        max: usize,
        /// Samples given.
        actual: usize,
    },
    /// Creating or writing the WAV file failed.
    #[error("WAV file {path}: {source}")]
    Wav {
        /// The recording's file.
        path: PathBuf,
        /// What hound reported.
        #[source]
        source: hound::Error,
    },
    /// The writer thread is far behind: this frame was dropped.
    #[error("recording writer backlogged, {dropped_frames} frames dropped so far")]
    Backlogged {
        /// Frames dropped on this recording so far.
        dropped_frames: u64,
    },
    /// The writer thread has stopped, or failed to spawn.
    #[error("recording writer thread is gone")]
    WriterGone,
    /// Spawning the writer thread failed.
    #[error("cannot spawn the recording writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// [`finalize_partial`] found a file it cannot make whole.
    #[error("WAV file {path} cannot be finalized: {why}")]
    NotRepairable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The WAV file.
    pub path: PathBuf,
    /// Sample rate of the file.
    pub sample_rate: SampleRate,
    /// 20 ms frames written (each with both channels).
    pub frames: u64,
    /// Frames dropped because the writer thread was backlogged.
    pub dropped_frames: u64,
}

impl RecordingSummary {
    /// Length of the recorded audio.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.frames * u64::from(crate::codec::FRAME_MS))
    }
}

/// A stereo WAV file being written (blocking I/O, buffered).
pub struct Recorder {
    writer: WavWriter<BufWriter<File>>,
    path: PathBuf,
    rate: SampleRate,
    frames: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("rate", &self.rate)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

/// Size of the file buffer in front of the WAV writer.
const FILE_BUFFER_BYTES: usize = 64 * 1024;

impl Recorder {
    /// Creates (or truncates) `path` and writes the WAV header.
    pub fn create(path: impl AsRef<Path>, rate: SampleRate) -> Result<Self, RecordError> {
        if rate == SampleRate::Hz48000 {
            return Err(RecordError::UnsupportedRate(rate.hz()));
        }
        let path = path.as_ref().to_path_buf();
        let wav_error = |source| RecordError::Wav {
            path: path.clone(),
            source,
        };
        let file = File::create(&path).map_err(|e| wav_error(hound::Error::IoError(e)))?;
        let spec = WavSpec {
            channels: 2,
            sample_rate: rate.hz(),
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let writer = WavWriter::new(BufWriter::with_capacity(FILE_BUFFER_BYTES, file), spec)
            .map_err(wav_error)?;
        Ok(Self {
            writer,
            path,
            rate,
            frames: 0,
        })
    }

    /// Writes one 20 ms tick: the caller's frame on the left, the agent's on
    /// the right. `None`, or a frame shorter than 20 ms, is padded with
    /// silence.
    pub fn write_frame(
        &mut self,
        caller: Option<&[i16]>,
        agent: Option<&[i16]>,
    ) -> Result<(), RecordError> {
        let frame = self.rate.frame_samples();
        let caller = check_side(frame, caller)?;
        let agent = check_side(frame, agent)?;
        let mut samples = self.writer.get_i16_writer(2 * frame as u32);
        for i in 0..frame {
            samples.write_sample(caller.get(i).copied().unwrap_or(0));
            samples.write_sample(agent.get(i).copied().unwrap_or(0));
        }
        let path = &self.path;
        samples.flush().map_err(|source| RecordError::Wav {
            path: path.clone(),
            source,
        })?;
        self.frames += 1;
        Ok(())
    }

    /// Writes whole interleaved frames (left, right, left, ...).
    fn write_interleaved(&mut self, samples: &[i16]) -> Result<(), RecordError> {
        let frame = 2 * self.rate.frame_samples();
        debug_assert_eq!(samples.len() % frame, 0);
        let mut writer = self.writer.get_i16_writer(samples.len() as u32);
        for &sample in samples {
            writer.write_sample(sample);
        }
        let path = &self.path;
        writer.flush().map_err(|source| RecordError::Wav {
            path: path.clone(),
            source,
        })?;
        self.frames += (samples.len() / frame) as u64;
        Ok(())
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recording's sample rate.
    pub fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// Flushes the buffer and completes the WAV header.
    pub fn finalize(self) -> Result<RecordingSummary, RecordError> {
        let Self {
            writer,
            path,
            rate,
            frames,
        } = self;
        match writer.finalize() {
            Ok(()) => Ok(RecordingSummary {
                path,
                sample_rate: rate,
                frames,
                dropped_frames: 0,
            }),
            Err(source) => Err(RecordError::Wav { path, source }),
        }
    }
}

/// Frames gathered by a [`RecordingHandle`] before they go to the thread.
pub const BATCH_FRAMES: usize = 50;

/// Frames a handle keeps while the writer's queue is full before dropping.
pub const MAX_PENDING_FRAMES: usize = 30 * BATCH_FRAMES;

/// Depth of the writer thread's queue, in batches.
const QUEUE_BATCHES: usize = 4096;

enum Command {
    Open(u64, Box<Recorder>),
    Samples(u64, Vec<i16>),
    Close(
        u64,
        u64,
        Option<oneshot::Sender<Result<RecordingSummary, RecordError>>>,
    ),
}

/// A dedicated thread writing any number of recordings; cheap to clone.
#[derive(Debug, Clone)]
pub struct RecordingWriter {
    queue: SyncSender<Command>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RecordingWriter {
    /// Starts the writer thread. It exits once every clone of the writer and
    /// every handle are dropped.
    pub fn spawn() -> Result<Self, RecordError> {
        let (queue, commands) = mpsc::sync_channel(QUEUE_BATCHES);
        let _thread: JoinHandle<()> = std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || run_writer(commands))
            .map_err(RecordError::Spawn)?;
        Ok(Self {
            queue,
            next_id: Default::default(),
        })
    }

    /// Creates the WAV file (a blocking call: do it outside the audio path,
    /// e.g. at call setup) and hands the recorder to the writer thread.
    pub fn open(
        &self,
        path: impl AsRef<Path>,
        rate: SampleRate,
    ) -> Result<RecordingHandle, RecordError> {
        let recorder = Recorder::create(path, rate)?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Opening waits for queue room: it is rare and not on the audio path.
        self.queue
            .send(Command::Open(id, Box::new(recorder)))
            .map_err(|_| RecordError::WriterGone)?;
        Ok(RecordingHandle {
            id,
            rate,
            queue: self.queue.clone(),
            batch: Vec::with_capacity(2 * rate.frame_samples() * BATCH_FRAMES),
            dropped_frames: 0,
            closed: false,
        })
    }
}

/// The audio path's end of one recording: never blocks.
#[derive(Debug)]
pub struct RecordingHandle {
    id: u64,
    rate: SampleRate,
    queue: SyncSender<Command>,
    /// Interleaved frames not yet handed to the thread.
    batch: Vec<i16>,
    dropped_frames: u64,
    closed: bool,
}

impl RecordingHandle {
    /// Records one 20 ms tick (see [`Recorder::write_frame`]). Copies the
    /// samples and, once per [`BATCH_FRAMES`], queues them without waiting.
    /// If the writer thread falls more than [`MAX_PENDING_FRAMES`] behind,
    /// the frame is dropped and [`RecordError::Backlogged`] returned.
    pub fn write_frame(
        &mut self,
        caller: Option<&[i16]>,
        agent: Option<&[i16]>,
    ) -> Result<(), RecordError> {
        let frame = self.rate.frame_samples();
        let caller = check_side(frame, caller)?;
        let agent = check_side(frame, agent)?;
        if self.batch.len() >= 2 * frame * MAX_PENDING_FRAMES {
            self.dropped_frames += 1;
            self.send_batch()?;
            return Err(RecordError::Backlogged {
                dropped_frames: self.dropped_frames,
            });
        }
        // Interleave into zeroed room (a short side stays padded with silence).
        let start = self.batch.len();
        self.batch.resize(start + 2 * frame, 0);
        let room = &mut self.batch[start..];
        for (pair, sample) in room.chunks_exact_mut(2).zip(caller) {
            pair[0] = *sample;
        }
        for (pair, sample) in room.chunks_exact_mut(2).zip(agent) {
            pair[1] = *sample;
        }
        if self.batch.len() >= 2 * frame * BATCH_FRAMES {
            self.send_batch()?;
        }
        Ok(())
    }

    /// Frames dropped so far because the writer was backlogged.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Sends what is left, closes the file and waits for the writer thread
    /// to report how it went.
    pub async fn finish(mut self) -> Result<RecordingSummary, RecordError> {
        let pending = std::mem::take(&mut self.batch);
        let (reply, outcome) = oneshot::channel();
        self.closed = true;
        let queue = self.queue.clone();
        let (id, dropped) = (self.id, self.dropped_frames);
        // The queue may be full: wait for room off the async thread.
        tokio::task::spawn_blocking(move || {
            if !pending.is_empty() {
                queue.send(Command::Samples(id, pending))?;
            }
            queue.send(Command::Close(id, dropped, Some(reply)))
        })
        .await
        .map_err(|_| RecordError::WriterGone)?
        .map_err(|_| RecordError::WriterGone)?;
        outcome.await.map_err(|_| RecordError::WriterGone)?
    }

    fn send_batch(&mut self) -> Result<(), RecordError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let capacity = self.batch.capacity();
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(capacity));
        match self.queue.try_send(Command::Samples(self.id, batch)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(command)) => {
                // Keep the audio and try again on the next batch boundary.
                if let Command::Samples(_, batch) = command {
                    self.batch = batch;
                }
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(RecordError::WriterGone),
        }
    }
}

impl Drop for RecordingHandle {
    /// A handle dropped without [`finish`](RecordingHandle::finish) still
    /// gets its file finalized, as far as the queue has room.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let pending = std::mem::take(&mut self.batch);
        if !pending.is_empty() {
            let _ = self.queue.try_send(Command::Samples(self.id, pending));
        }
        let _ = self
            .queue
            .try_send(Command::Close(self.id, self.dropped_frames, None));
    }
}

fn check_side(frame: usize, side: Option<&[i16]>) -> Result<&[i16], RecordError> {
    let side = side.unwrap_or(&[]);
    if side.len() > frame {
        return Err(RecordError::FrameTooLong {
            max: frame,
            actual: side.len(),
        });
    }
    Ok(side)
}

/// The writer thread: owns the open recordings, writes batches, finalizes.
fn run_writer(commands: Receiver<Command>) {
    let mut open: HashMap<u64, Result<Recorder, RecordError>> = HashMap::new();
    while let Ok(command) = commands.recv() {
        match command {
            Command::Open(id, recorder) => {
                open.insert(id, Ok(*recorder));
            }
            Command::Samples(id, samples) => {
                if let Some(slot) = open.get_mut(&id) {
                    if let Ok(recorder) = slot {
                        if let Err(error) = recorder.write_interleaved(&samples) {
                            tracing::warn!(%error, "recording write failed");
                            *slot = Err(error);
                        }
                    }
                }
            }
            Command::Close(id, dropped_frames, reply) => {
                let outcome = match open.remove(&id) {
                    Some(Ok(recorder)) => recorder.finalize().map(|summary| RecordingSummary {
                        dropped_frames,
                        ..summary
                    }),
                    Some(Err(error)) => Err(error),
                    None => Err(RecordError::WriterGone),
                };
                if let Err(error) = &outcome {
                    tracing::warn!(%error, "recording finalize failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// Most bytes of a WAV header read by [`finalize_partial`] to find the `data` chunk.
const MAX_HEADER_BYTES: usize = 4096;

/// Makes whole a recording whose writer never finalized it (the process was killed
/// mid-call): the RIFF and `data` sizes in the header still say 0, so players see no audio.
/// Sets them from the file's length (dropping a trailing partial sample frame) so that the
/// file plays as far as it was written, and reports what it holds. Blocking file I/O.
pub fn finalize_partial(path: impl AsRef<Path>) -> Result<RecordingSummary, RecordError> {
    use std::io::{Read, Seek, SeekFrom, Write};

    let path = path.as_ref().to_path_buf();
    let io = |error| RecordError::Wav {
        path: path.clone(),
        source: hound::Error::IoError(error),
    };
    let broken = |why| RecordError::NotRepairable {
        path: path.clone(),
        why,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let mut head =
        vec![0; usize::try_from(length).map_or(MAX_HEADER_BYTES, |l| l.min(MAX_HEADER_BYTES))];
    file.read_exact(&mut head).map_err(io)?;
    let layout = wav_layout(&head).map_err(broken)?;
    let block = u64::from(layout.block_align);
    let data_len = length.saturating_sub(layout.data_start) / block * block;
    let riff_len = u32::try_from(layout.data_start + data_len - 8)
        .map_err(|_| broken("larger than a WAV file can say (4 GiB)"))?;
    let data_len32 = u32::try_from(data_len).map_err(|_| broken("larger than 4 GiB"))?;
    file.set_len(layout.data_start + data_len).map_err(io)?;
    file.seek(SeekFrom::Start(4)).map_err(io)?;
    file.write_all(&riff_len.to_le_bytes()).map_err(io)?;
    file.seek(SeekFrom::Start(layout.data_start - 4))
        .map_err(io)?;
    file.write_all(&data_len32.to_le_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    let frame_bytes = block * layout.rate.frame_samples() as u64;
    Ok(RecordingSummary {
        path,
        sample_rate: layout.rate,
        frames: data_len / frame_bytes,
        dropped_frames: 0,
    })
}

/// Where the samples of a WAV file start, and their layout.
struct WavLayout {
    rate: SampleRate,
    block_align: u16,
    /// Offset of the first sample (just after the `data` chunk header).
    data_start: u64,
}

/// Walks the chunks of a WAV header (`RIFF`, `WAVE`, `fmt `, ..., `data`).
fn wav_layout(head: &[u8]) -> Result<WavLayout, &'static str> {
    let u16_at = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if head.get(0..4) != Some(b"RIFF") || head.get(8..12) != Some(b"WAVE") {
        return Err("not a RIFF/WAVE file");
    }
    let mut at = 12;
    let mut format = None;
    loop {
        let (Some(id), Some(size)) = (head.get(at..at + 4), u32_at(at + 4)) else {
            return Err("no data chunk in the header");
        };
        let body = at + 8;
        if id == b"data" {
            let (rate, block_align) = format.ok_or("data chunk before the fmt chunk")?;
            return Ok(WavLayout {
                rate,
                block_align,
                data_start: body as u64,
            });
        }
        if id == b"fmt " {
            let hz = u32_at(body + 4).ok_or("truncated fmt chunk")?;
            let block_align = u16_at(body + 12).ok_or("truncated fmt chunk")?;
            let rate = SampleRate::from_hz(hz).ok_or("unsupported sample rate")?;
            if block_align == 0 {
                return Err("block align of 0");
            }
            format = Some((rate, block_align));
        }
        // Chunks are padded to an even size.
        let size = usize::try_from(size).map_err(|_| "chunk too large")?;
        at = body + size + (size & 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dialcore-record-{}-{name}.wav", std::process::id()))
    }

    #[test]
    fn rejects_48k_and_long_frames() {
        assert!(matches!(
            Recorder::create(temp_path("48k"), SampleRate::Hz48000),
            Err(RecordError::UnsupportedRate(48000))
        ));
        let path = temp_path("long");
        let mut recorder = Recorder::create(&path, SampleRate::Hz8000).unwrap();
        assert!(matches!(
            recorder.write_frame(Some(&[0; 161]), None),
            Err(RecordError::FrameTooLong {
                max: 160,
                actual: 161
            })
        ));
        let summary = recorder.finalize().unwrap();
        assert_eq!(summary.frames, 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn missing_sides_are_silence() {
        let path = temp_path("silence");
        let mut recorder = Recorder::create(&path, SampleRate::Hz8000).unwrap();
        recorder.write_frame(Some(&[100; 160]), None).unwrap();
        recorder.write_frame(None, Some(&[-200; 80])).unwrap();
        let summary = recorder.finalize().unwrap();
        assert_eq!(summary.duration(), Duration::from_millis(40));
        let samples: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .into_samples::<i16>()
            .map(Result::unwrap)
            .collect();
        assert_eq!(samples.len(), 2 * 320);
        assert_eq!(&samples[..4], &[100, 0, 100, 0]);
        assert_eq!(&samples[320..324], &[0, -200, 0, -200]);
        assert_eq!(&samples[320 + 160..320 + 162], &[0, 0]);
        std::fs::remove_file(path).unwrap();
    }

    /// What a recording looks like after `kill -9`: samples on disk, header sizes of 0.
    fn unfinalized(path: &Path, frames: usize, extra_bytes: usize) -> Vec<u8> {
        let mut recorder = Recorder::create(path, SampleRate::Hz8000).unwrap();
        for i in 0..frames {
            recorder
                .write_frame(Some(&[i as i16; 160]), Some(&[-(i as i16); 160]))
                .unwrap();
        }
        let summary = recorder.finalize().unwrap();
        assert_eq!(summary.frames, frames as u64);
        let mut bytes = std::fs::read(path).unwrap();
        let whole = bytes.clone();
        let data = bytes.windows(4).position(|w| w == b"data").unwrap();
        bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
        bytes[data + 4..data + 8].copy_from_slice(&0u32.to_le_bytes());
        bytes.extend(std::iter::repeat_n(7u8, extra_bytes));
        std::fs::write(path, &bytes).unwrap();
        whole
    }

    #[test]
    fn a_partial_recording_is_made_whole_from_its_length() {
        let path = temp_path("partial");
        let whole = unfinalized(&path, 3, 3);
        let zero_data = hound::WavReader::open(&path).unwrap().len();
        assert_eq!(zero_data, 0, "the header says nothing was recorded");
        let summary = finalize_partial(&path).unwrap();
        assert_eq!(summary.frames, 3);
        assert_eq!(summary.sample_rate, SampleRate::Hz8000);
        // Byte for byte what a finalized recording is; the partial sample frame is gone.
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.len(), 2 * 160 * 3);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn what_is_not_a_recording_is_refused_and_left_alone() {
        let path = temp_path("garbage");
        std::fs::write(&path, b"RIFX....WAVEfmt ").unwrap();
        assert!(matches!(
            finalize_partial(&path),
            Err(RecordError::NotRepairable { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"RIFX....WAVEfmt ");
        std::fs::write(&path, b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0").unwrap();
        assert!(matches!(
            finalize_partial(&path),
            Err(RecordError::NotRepairable { .. })
        ));
        std::fs::remove_file(path).unwrap();
        assert!(matches!(
            finalize_partial(temp_path("missing")),
            Err(RecordError::Wav { .. })
        ));
    }
}

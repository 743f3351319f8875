//! Stereo WAV recording of a call: caller on the left channel, agent on the
//! right, 16-bit PCM at 8 or 16 kHz.
//!
//! Two layers:
//!
//! - [`Recorder`] is the synchronous core: one file, its 44-byte canonical
//!   PCM header written at create with sizes of 0 and patched in place at
//!   [`finalize`](Recorder::finalize) (or drop). The samples go to the file as
//!   little-endian bytes, one `write` per call and no buffer of its own: **this
//!   is blocking file I/O**, so do not drive a `Recorder` from an async task
//!   that shares its thread with other calls' audio.
//! - [`RecordingWriter`] is one dedicated OS thread that owns any number of
//!   recordings. [`RecordingWriter::open`] hands back a [`RecordingHandle`]
//!   whose [`write_frame`](RecordingHandle::write_frame) only interleaves the
//!   samples into a small batch and, every [`BATCH_FRAMES`] frames, passes it
//!   to the thread with a non-blocking `try_send`: safe to call from the audio
//!   path of a tokio task. [`RecordingHandle::finish`] sends what is left,
//!   finalizes the WAV header and reports the outcome.
//!
//! Why it is shaped so (at 1000 calls the old design, a second-long batch per
//! call, `hound`'s per-sample writer and a 64 KiB `BufWriter` per file, cost
//! about 12 % of the server's CPU and 100 kB of each call's memory):
//!
//! - While recordings are open the writer thread never blocks on its queue: it
//!   drains it every [`DRAIN_PERIOD`] and sleeps in between, so a handle's
//!   `try_send` never has a thread to wake (no futex call on the audio path).
//!   It blocks in `recv` only when no recording is open. A close therefore
//!   takes up to one period longer; only [`finish`](RecordingHandle::finish),
//!   off the audio path, waits for it.
//! - A call holds one batch of 200 ms (6.4 kB at 8 kHz, 12.8 kB at 16 kHz),
//!   and the thread one conversion buffer for all its recordings.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::codec::{SampleRate, FRAME_MS};

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
    /// [`Recorder::write_interleaved`] was given part of a frame.
    #[error("{samples} interleaved samples are not whole frames of {frame}")]
    NotWholeFrames {
        /// Samples given.
        samples: usize,
        /// Interleaved samples in one frame (both channels).
        frame: usize,
    },
    /// Creating or writing the WAV file failed.
    #[error("WAV file {path}: {source}")]
    Wav {
        /// The recording's file.
        path: PathBuf,
        /// What the file system reported.
        #[source]
        source: std::io::Error,
    },
    /// The samples would pass what the 32-bit sizes of a WAV header can say
    /// (4 GiB, some 18 hours at 16 kHz): nothing more is written, and the
    /// file keeps what it has.
    #[error("WAV file {path} would pass 4 GiB of samples ({bytes} bytes)")]
    TooLarge {
        /// The recording's file.
        path: PathBuf,
        /// Sample bytes the file would have held.
        bytes: u64,
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
        Duration::from_millis(self.frames * u64::from(FRAME_MS))
    }
}

/// A stereo WAV file being written (blocking, unbuffered I/O).
pub struct Recorder {
    file: File,
    path: PathBuf,
    rate: SampleRate,
    frames: u64,
    /// Sample bytes written after the header.
    data_bytes: u64,
    /// The header's sizes are patched (by `finalize`); else drop patches them.
    finalized: bool,
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

impl Recorder {
    /// Creates (or truncates) `path` and writes the WAV header, with sizes of
    /// 0 until [`finalize`](Self::finalize) (what [`finalize_partial`]
    /// repairs if the process dies first).
    pub fn create(path: impl AsRef<Path>, rate: SampleRate) -> Result<Self, RecordError> {
        if rate == SampleRate::Hz48000 {
            return Err(RecordError::UnsupportedRate(rate.hz()));
        }
        let path = path.as_ref().to_path_buf();
        let mut file = match File::create(&path) {
            Ok(file) => file,
            Err(source) => return Err(RecordError::Wav { path, source }),
        };
        if let Err(source) = file.write_all(&wav_header(rate)) {
            return Err(RecordError::Wav { path, source });
        }
        Ok(Self {
            file,
            path,
            rate,
            frames: 0,
            data_bytes: 0,
            finalized: false,
        })
    }

    /// Writes one 20 ms tick: the caller's frame on the left, the agent's on
    /// the right. `None`, or a frame shorter than 20 ms, is padded with
    /// silence. One `write` per call: for many frames, prefer
    /// [`write_interleaved`](Self::write_interleaved).
    pub fn write_frame(
        &mut self,
        caller: Option<&[i16]>,
        agent: Option<&[i16]>,
    ) -> Result<(), RecordError> {
        let frame = self.rate.frame_samples();
        let caller = check_side(frame, caller)?;
        let agent = check_side(frame, agent)?;
        let mut samples = [0i16; 2 * MAX_FRAME_SAMPLES];
        let samples = &mut samples[..2 * frame];
        interleave(samples, caller, agent);
        let mut bytes = [0u8; 4 * MAX_FRAME_SAMPLES];
        let bytes = &mut bytes[..4 * frame];
        to_le_bytes(samples, bytes);
        self.write_samples(bytes, 1)
    }

    /// Writes whole interleaved frames (left, right, left, ...), converted to
    /// little-endian bytes in `scratch`: one `write` per
    /// [`SCRATCH_SAMPLES`] samples (so one per batch of a handle). The writer
    /// thread passes one scratch buffer for all its recordings; it grows to at
    /// most `2 * SCRATCH_SAMPLES` bytes.
    pub fn write_interleaved(
        &mut self,
        samples: &[i16],
        scratch: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let frame = 2 * self.rate.frame_samples();
        if !samples.len().is_multiple_of(frame) {
            return Err(RecordError::NotWholeFrames {
                samples: samples.len(),
                frame,
            });
        }
        let total = 2 * samples.len() as u64;
        self.check_room(total)?;
        let room = 2 * samples.len().min(SCRATCH_SAMPLES);
        if scratch.len() < room {
            scratch.resize(room, 0);
        }
        // A chunk of whole frames, so that a failed write leaves whole frames
        // counted.
        let chunk_samples = SCRATCH_SAMPLES / frame * frame;
        for chunk in samples.chunks(chunk_samples) {
            let bytes = &mut scratch[..2 * chunk.len()];
            to_le_bytes(chunk, bytes);
            self.write_samples(bytes, (chunk.len() / frame) as u64)?;
        }
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

    /// Completes the WAV header: patches its RIFF and `data` sizes in place.
    pub fn finalize(mut self) -> Result<RecordingSummary, RecordError> {
        self.finalized = true;
        self.patch_sizes()?;
        Ok(RecordingSummary {
            path: std::mem::take(&mut self.path),
            sample_rate: self.rate,
            frames: self.frames,
            dropped_frames: 0,
        })
    }

    /// Errs if `more` sample bytes would take the file past what its header
    /// can say.
    fn check_room(&self, more: u64) -> Result<(), RecordError> {
        let bytes = self.data_bytes + more;
        match chunk_sizes(HEADER_BYTES, bytes) {
            Some(_) => Ok(()),
            None => Err(RecordError::TooLarge {
                path: self.path.clone(),
                bytes,
            }),
        }
    }

    /// Appends `frames` frames of sample bytes.
    fn write_samples(&mut self, bytes: &[u8], frames: u64) -> Result<(), RecordError> {
        self.check_room(bytes.len() as u64)?;
        self.file
            .write_all(bytes)
            .map_err(|source| RecordError::Wav {
                path: self.path.clone(),
                source,
            })?;
        self.data_bytes += bytes.len() as u64;
        self.frames += frames;
        Ok(())
    }

    fn patch_sizes(&self) -> Result<(), RecordError> {
        let (riff, data) = chunk_sizes(HEADER_BYTES, self.data_bytes)
            .expect("writes stop before the sizes would overflow");
        self.file
            .write_all_at(&riff.to_le_bytes(), RIFF_SIZE_AT)
            .and_then(|()| self.file.write_all_at(&data.to_le_bytes(), DATA_SIZE_AT))
            .map_err(|source| RecordError::Wav {
                path: self.path.clone(),
                source,
            })
    }
}

impl Drop for Recorder {
    /// A recorder dropped without [`finalize`](Recorder::finalize) (its
    /// recording failed, or the writer thread is shutting down) still gets
    /// the sizes of what it wrote into its header; errors are not seen.
    fn drop(&mut self) {
        if !self.finalized {
            let _ = self.patch_sizes();
        }
    }
}

/// Frames gathered by a [`RecordingHandle`] before they go to the thread
/// (200 ms): small, so that a call holds a few kB for its recording.
pub const BATCH_FRAMES: usize = 10;

/// Frames a handle keeps while the writer's queue is full before dropping
/// (30 s).
pub const MAX_PENDING_FRAMES: usize = 30 * 1000 / FRAME_MS as usize;

/// Samples the writer converts per `write` (64 KiB of bytes); a handle's
/// batch is at most 6400 (200 ms at 16 kHz), so it is one write.
pub const SCRATCH_SAMPLES: usize = 32 * 1024;

/// How often the writer thread drains its queue while recordings are open.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// Depth of the writer thread's queue, in batches. A drain period brings one
/// batch from every fourth call, so this is room for some 16 000 calls.
const QUEUE_BATCHES: usize = 4096;

/// Samples in the longest frame recorded (20 ms at 16 kHz).
const MAX_FRAME_SAMPLES: usize = SampleRate::Hz16000.frame_samples();

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
            .spawn(move || Writer::default().run(&commands))
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
        Ok(RecordingHandle::new(id, rate, self.queue.clone()))
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
        let pending_limit = 2 * frame * MAX_PENDING_FRAMES;
        if self.batch.len() >= pending_limit {
            // The queue was full at the last try: try once more before dropping.
            self.send_batch()?;
            if self.batch.len() >= pending_limit {
                self.dropped_frames += 1;
                return Err(RecordError::Backlogged {
                    dropped_frames: self.dropped_frames,
                });
            }
        }
        // Interleave into zeroed room (a short side stays padded with silence).
        let start = self.batch.len();
        self.batch.resize(start + 2 * frame, 0);
        interleave(&mut self.batch[start..], caller, agent);
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
    /// to report how it went (up to a [`DRAIN_PERIOD`] after the send).
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

    fn new(id: u64, rate: SampleRate, queue: SyncSender<Command>) -> Self {
        Self {
            id,
            rate,
            queue,
            batch: Vec::with_capacity(batch_samples(rate)),
            dropped_frames: 0,
            closed: false,
        }
    }

    fn send_batch(&mut self) -> Result<(), RecordError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        match self.queue.try_send(Command::Samples(self.id, batch)) {
            Ok(()) => {
                // A batch that grew while the queue was full is not the size to keep.
                self.batch = Vec::with_capacity(batch_samples(self.rate));
                Ok(())
            }
            Err(TrySendError::Full(command)) => {
                // Keep the audio and try again on the next frame.
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

/// Interleaved samples in one batch of a handle at `rate`.
fn batch_samples(rate: SampleRate) -> usize {
    2 * rate.frame_samples() * BATCH_FRAMES
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

/// Writes `caller` to the even and `agent` to the odd samples of `room` (one
/// zeroed frame of both channels); a short side leaves its tail silent. Zipped
/// iterators, so that no sample is bounds-checked.
fn interleave(room: &mut [i16], caller: &[i16], agent: &[i16]) {
    if 2 * caller.len() == room.len() && 2 * agent.len() == room.len() {
        for (pair, (&left, &right)) in room.chunks_exact_mut(2).zip(caller.iter().zip(agent)) {
            pair[0] = left;
            pair[1] = right;
        }
        return;
    }
    for (pair, &left) in room.chunks_exact_mut(2).zip(caller) {
        pair[0] = left;
    }
    for (pair, &right) in room.chunks_exact_mut(2).zip(agent) {
        pair[1] = right;
    }
}

/// The samples as little-endian bytes (`bytes` is twice as long). Byte by
/// byte: a `copy_from_slice` of each sample's two bytes was a `memcpy` call
/// per sample.
fn to_le_bytes(samples: &[i16], bytes: &mut [u8]) {
    for (out, sample) in bytes.chunks_exact_mut(2).zip(samples) {
        let [low, high] = sample.to_le_bytes();
        out[0] = low;
        out[1] = high;
    }
}

/// The writer thread's state: the open recordings and the one buffer their
/// samples are converted in.
#[derive(Default)]
struct Writer {
    open: HashMap<u64, Result<Recorder, RecordError>>,
    scratch: Vec<u8>,
}

impl Writer {
    /// Runs until every sender is gone; recordings still open then are
    /// finalized by [`Recorder`]'s drop.
    fn run(mut self, commands: &Receiver<Command>) {
        loop {
            if self.open.is_empty() {
                // Nothing to write until a recording opens: block.
                match commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            loop {
                match commands.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if !self.open.is_empty() {
                // Not woken by the handles' sends: they never pay for a wake-up.
                std::thread::sleep(DRAIN_PERIOD);
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open(id, recorder) => {
                self.open.insert(id, Ok(*recorder));
            }
            Command::Samples(id, samples) => {
                if let Some(slot) = self.open.get_mut(&id) {
                    if let Ok(recorder) = slot {
                        if let Err(error) = recorder.write_interleaved(&samples, &mut self.scratch)
                        {
                            tracing::warn!(%error, "recording write failed");
                            *slot = Err(error);
                        }
                    }
                }
            }
            Command::Close(id, dropped_frames, reply) => {
                let outcome = match self.open.remove(&id) {
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

/// Bytes of the canonical PCM WAV header [`Recorder`] writes.
const HEADER_BYTES: u64 = 44;
/// Where the RIFF chunk's size is in the header.
const RIFF_SIZE_AT: u64 = 4;
/// Where the `data` chunk's size is in the header.
const DATA_SIZE_AT: u64 = HEADER_BYTES - 4;

/// The header of a 16-bit stereo PCM file at `rate`, sizes 0: byte for byte
/// what `hound` writes for that format (`RIFF`, `WAVE`, a 16-byte `fmt `
/// chunk of format 1, then the `data` chunk's header).
fn wav_header(rate: SampleRate) -> [u8; HEADER_BYTES as usize] {
    const CHANNELS: u16 = 2;
    const BLOCK_ALIGN: u16 = CHANNELS * 2;
    let mut header = [0u8; HEADER_BYTES as usize];
    header[0..4].copy_from_slice(b"RIFF");
    header[8..12].copy_from_slice(b"WAVE");
    header[12..16].copy_from_slice(b"fmt ");
    header[16..20].copy_from_slice(&16u32.to_le_bytes());
    header[20..22].copy_from_slice(&1u16.to_le_bytes());
    header[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    header[24..28].copy_from_slice(&rate.hz().to_le_bytes());
    header[28..32].copy_from_slice(&(rate.hz() * u32::from(BLOCK_ALIGN)).to_le_bytes());
    header[32..34].copy_from_slice(&BLOCK_ALIGN.to_le_bytes());
    header[34..36].copy_from_slice(&16u16.to_le_bytes());
    header[36..40].copy_from_slice(b"data");
    header
}

/// The RIFF and `data` chunk sizes of a WAV file whose samples start at
/// `data_start` and fill `data_bytes`, or `None` past what their 32 bits can
/// say (about 4 GiB).
fn chunk_sizes(data_start: u64, data_bytes: u64) -> Option<(u32, u32)> {
    let riff = (data_start + data_bytes).checked_sub(8)?;
    Some((u32::try_from(riff).ok()?, u32::try_from(data_bytes).ok()?))
}

/// Most bytes of a WAV header read by [`finalize_partial`] to find the `data` chunk.
const MAX_HEADER_BYTES: usize = 4096;

/// Makes whole a recording whose writer never finalized it (the process was killed
/// mid-call): the RIFF and `data` sizes in the header still say 0, so players see no audio.
/// Sets them from the file's length (dropping a trailing partial sample frame) so that the
/// file plays as far as it was written, and reports what it holds. Blocking file I/O.
pub fn finalize_partial(path: impl AsRef<Path>) -> Result<RecordingSummary, RecordError> {
    use std::io::{Read, Seek, SeekFrom};

    let path = path.as_ref().to_path_buf();
    let io = |source| RecordError::Wav {
        path: path.clone(),
        source,
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
    let (riff_len, data_len32) = chunk_sizes(layout.data_start, data_len)
        .ok_or_else(|| broken("larger than a WAV file can say (4 GiB)"))?;
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

    fn read_samples(path: &Path) -> Vec<i16> {
        hound::WavReader::open(path)
            .unwrap()
            .into_samples::<i16>()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn the_header_is_hounds_with_its_sizes_patched_at_finalize() {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            let frame = rate.frame_samples();
            let ours = temp_path(&format!("header-ours-{}", rate.hz()));
            let recorder = Recorder::create(&ours, rate).unwrap();
            let created = std::fs::read(&ours).unwrap();
            assert_eq!(created.len(), 44, "the header alone");
            assert_eq!(&created[4..8], &[0; 4], "RIFF size 0 until finalize");
            assert_eq!(&created[40..44], &[0; 4], "data size 0 until finalize");
            drop(recorder);

            // 12 frames, in a frame, a batch and a frame.
            let samples: Vec<i16> = (0..12 * 2 * frame)
                .map(|i| (i as i16).wrapping_mul(37))
                .collect();
            let mut recorder = Recorder::create(&ours, rate).unwrap();
            let caller: Vec<i16> = samples[..2 * frame].iter().step_by(2).copied().collect();
            let agent: Vec<i16> = samples[1..2 * frame].iter().step_by(2).copied().collect();
            recorder.write_frame(Some(&caller), Some(&agent)).unwrap();
            let mut scratch = Vec::new();
            recorder
                .write_interleaved(&samples[2 * frame..11 * 2 * frame], &mut scratch)
                .unwrap();
            recorder
                .write_interleaved(&samples[11 * 2 * frame..], &mut scratch)
                .unwrap();
            let summary = recorder.finalize().unwrap();
            assert_eq!(summary.frames, 12);

            // The same samples through hound: the same file, byte for byte.
            let theirs = temp_path(&format!("header-hound-{}", rate.hz()));
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: rate.hz(),
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut writer = hound::WavWriter::create(&theirs, spec).unwrap();
            for &sample in &samples {
                writer.write_sample(sample).unwrap();
            }
            writer.finalize().unwrap();
            let bytes = std::fs::read(&ours).unwrap();
            assert_eq!(bytes, std::fs::read(&theirs).unwrap());
            let data = 12 * 4 * frame as u32;
            assert_eq!(&bytes[4..8], &(36 + data).to_le_bytes());
            assert_eq!(&bytes[40..44], &data.to_le_bytes());
            let reader = hound::WavReader::open(&ours).unwrap();
            assert_eq!(reader.spec(), spec);
            assert_eq!(read_samples(&ours), samples);
            std::fs::remove_file(ours).unwrap();
            std::fs::remove_file(theirs).unwrap();
        }
    }

    #[test]
    fn part_of_a_frame_is_refused() {
        let path = temp_path("part");
        let mut recorder = Recorder::create(&path, SampleRate::Hz8000).unwrap();
        assert!(matches!(
            recorder.write_interleaved(&[0; 321], &mut Vec::new()),
            Err(RecordError::NotWholeFrames {
                samples: 321,
                frame: 320
            })
        ));
        assert_eq!(recorder.finalize().unwrap().frames, 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn sizes_stop_at_what_32_bits_can_say() {
        // RIFF size (file length - 8) is the first to overflow.
        let most = u64::from(u32::MAX) - 36;
        assert_eq!(chunk_sizes(44, most), Some((u32::MAX, u32::MAX - 36)));
        assert_eq!(chunk_sizes(44, most + 1), None);
        assert_eq!(chunk_sizes(44, 0), Some((36, 0)));
        // A header with more chunks leaves less room.
        assert_eq!(chunk_sizes(80, most), None);
    }

    #[test]
    fn a_recording_about_to_pass_4_gib_is_refused_and_keeps_its_size() {
        let path = temp_path("4gib");
        let mut recorder = Recorder::create(&path, SampleRate::Hz8000).unwrap();
        recorder.write_frame(Some(&[5; 160]), None).unwrap();
        // As if 4 GiB were written: one more frame does not fit, but most does.
        let room = u64::from(u32::MAX) - 36;
        recorder.data_bytes = room - 639;
        assert!(matches!(
            recorder.write_frame(Some(&[5; 160]), None),
            Err(RecordError::TooLarge { bytes, .. }) if bytes == room + 1
        ));
        assert!(matches!(
            recorder.write_interleaved(&[5; 320], &mut Vec::new()),
            Err(RecordError::TooLarge { .. })
        ));
        assert_eq!(recorder.frames_written(), 1);
        recorder.data_bytes = room - 640;
        recorder.write_frame(Some(&[5; 160]), None).unwrap();
        assert_eq!(recorder.frames_written(), 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            44 + 2 * 640,
            "nothing of the refused frames reached the file"
        );
        recorder.data_bytes = 2 * 640;
        recorder.finalize().unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_dropped_recorder_finalizes_its_file() {
        let path = temp_path("dropped-recorder");
        let mut recorder = Recorder::create(&path, SampleRate::Hz16000).unwrap();
        for i in 0..3 {
            recorder
                .write_frame(Some(&[i; 320]), Some(&[-i; 320]))
                .unwrap();
        }
        drop(recorder);
        let samples = read_samples(&path);
        assert_eq!(samples.len(), 3 * 2 * 320);
        assert_eq!(&samples[2 * 2 * 320..2 * 2 * 320 + 2], &[2, -2]);
        std::fs::remove_file(path).unwrap();
    }

    /// Frame `index` of a side: every sample is the index, negative on the agent's side.
    fn numbered(index: usize, side: i16) -> [i16; 160] {
        [side * index as i16; 160]
    }

    #[tokio::test]
    async fn a_backlogged_writer_makes_the_handle_drop_frames_then_catch_up() {
        let path = temp_path("backlogged");
        let rate = SampleRate::Hz8000;
        // A queue of one, filled by the open: the writer is as good as stalled.
        let (queue, commands) = mpsc::sync_channel(1);
        queue
            .send(Command::Open(
                7,
                Box::new(Recorder::create(&path, rate).unwrap()),
            ))
            .unwrap();
        let mut handle = RecordingHandle::new(7, rate, queue);
        for i in 0..MAX_PENDING_FRAMES {
            handle
                .write_frame(Some(&numbered(i, 1)), Some(&numbered(i, -1)))
                .expect("up to 30 s are kept");
        }
        let dropped = MAX_PENDING_FRAMES;
        assert!(matches!(
            handle.write_frame(Some(&numbered(dropped, 1)), Some(&numbered(dropped, -1))),
            Err(RecordError::Backlogged { dropped_frames: 1 })
        ));
        assert_eq!(handle.dropped_frames(), 1);

        // The writer takes the open off the queue: the next frame goes through,
        // after the 30 s kept.
        let mut writer = Writer::default();
        writer.handle(commands.try_recv().unwrap());
        let after = dropped + 1;
        handle
            .write_frame(Some(&numbered(after, 1)), Some(&numbered(after, -1)))
            .expect("room again");
        assert_eq!(
            handle.batch.capacity(),
            batch_samples(rate),
            "a fresh batch"
        );
        writer.handle(commands.try_recv().unwrap());
        std::thread::spawn(move || writer.run(&commands));
        let summary = handle.finish().await.unwrap();
        assert_eq!(summary.frames, MAX_PENDING_FRAMES as u64 + 1);
        assert_eq!(summary.dropped_frames, 1);

        let samples = read_samples(&path);
        assert_eq!(samples.len(), 2 * 160 * (MAX_PENDING_FRAMES + 1));
        let frames: Vec<(i16, i16)> = samples.chunks(320).map(|f| (f[0], f[1])).collect();
        assert_eq!(frames[0], (0, 0));
        assert_eq!(frames[MAX_PENDING_FRAMES - 1], (1499, -1499));
        assert_eq!(
            frames[MAX_PENDING_FRAMES],
            (1501, -1501),
            "frame 1500 was dropped"
        );
        std::fs::remove_file(path).unwrap();
    }
}

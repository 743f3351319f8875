//! The `echo` runtime: plays back what it hears, frame by frame.
//!
//! Each inbound 20 ms frame is played back as it arrives: run in the media
//! tick ([`TickRuntime`]) the caller hears itself after its jitter buffer and
//! nothing more; run as a task, one frame period later. Useful for tests and
//! for measuring the round trip of the audio path.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{
    AgentRuntime, CallMetadata, RuntimeError, RuntimeInput, RuntimeOutput, RuntimeSession,
    TickRuntime,
};

/// The echo runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl AgentRuntime for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }

    fn run(
        self: Box<Self>,
        _metadata: CallMetadata,
        session: RuntimeSession,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        run(session).boxed()
    }

    fn in_tick(&self) -> Option<Box<dyn TickRuntime>> {
        Some(Box::new(Echo))
    }
}

impl TickRuntime for Echo {
    /// The frame heard is the frame played back, in the same tick.
    fn on_frame(&mut self, inbound: &[i16], out: &mut [i16]) -> bool {
        out.copy_from_slice(inbound);
        true
    }
}

async fn run(mut session: RuntimeSession) -> Result<(), RuntimeError> {
    while let Some(input) = session.input.recv().await {
        if let RuntimeInput::Audio(frame) = input {
            if !session
                .send(RuntimeOutput::Audio(frame.samples().to_vec()))
                .await
            {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use media::stream::{AudioFrame, FrameKind};

    use super::*;

    fn metadata(rate: u32) -> CallMetadata {
        CallMetadata {
            call_id: "call_test".into(),
            org_id: "org_test".into(),
            agent_id: "agt_test".into(),
            direction: crate::agent::Direction::Inbound,
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            prompt: String::new(),
            greeting: None,
            variables: Default::default(),
            sip_call_id: None,
            sample_rate: rate,
        }
    }

    #[tokio::test]
    async fn echoes_every_frame_in_order() {
        let (session, input, mut output) = RuntimeSession::channel(64);
        let task = tokio::spawn(Box::new(Echo).run(metadata(8000), session));
        for k in 0..10i16 {
            let pcm = [k * 100; 160];
            let frame = AudioFrame::new(&pcm, FrameKind::Voice).expect("160 samples fit");
            input
                .send(RuntimeInput::Audio(frame))
                .await
                .expect("runtime alive");
        }
        input
            .send(RuntimeInput::Dtmf('5'))
            .await
            .expect("runtime alive");
        drop(input);
        for k in 0..10i16 {
            assert_eq!(
                output.recv().await,
                Some(RuntimeOutput::Audio(vec![k * 100; 160]))
            );
        }
        assert_eq!(
            output.recv().await,
            None,
            "digits are not echoed; ends with input"
        );
        task.await.expect("no panic").expect("no error");
    }
}

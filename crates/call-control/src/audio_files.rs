//! Audio files that tenants may name (a scripted agent's `say` step, a test-call script's
//! `say file.wav`): only by a plain relative name inside one directory the operator
//! configured, checked when the object is written and again when the file is opened, so
//! nothing a tenant writes can make the service read another file (another
//! organisation's recording, say).

use std::path::{Component, Path, PathBuf};

/// Why a named audio file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioFileError {
    /// The server has no audio directory for this kind of file.
    #[error("{name}: audio files need {setting} on the server")]
    NoDirectory {
        /// The name given.
        name: String,
        /// The setting that names the directory (`[agents] audio_dir`).
        setting: &'static str,
    },
    /// The name is absolute, or has `..`, `.` or a root in it.
    #[error("{name}: must be a plain relative path inside the audio directory")]
    NotPlain {
        /// The name given.
        name: String,
    },
    /// No regular file of that name in the directory (or it leads outside it).
    #[error("{name}: no such file in the audio directory")]
    Missing {
        /// The name given.
        name: String,
    },
}

/// The file `name` inside `dir` (the directory of `setting`), refused unless `name` is a
/// plain relative path and the file, with every symbolic link resolved, is a regular file
/// inside the directory.
pub fn resolve(
    dir: Option<&Path>,
    name: &Path,
    setting: &'static str,
) -> Result<PathBuf, AudioFileError> {
    let shown = || name.display().to_string();
    let Some(dir) = dir else {
        return Err(AudioFileError::NoDirectory {
            name: shown(),
            setting,
        });
    };
    let plain = name.components().next().is_some()
        && name
            .components()
            .all(|part| matches!(part, Component::Normal(_)));
    if !plain {
        return Err(AudioFileError::NotPlain { name: shown() });
    }
    let missing = || AudioFileError::Missing { name: shown() };
    let root = dir.canonicalize().map_err(|_| missing())?;
    let file = root.join(name).canonicalize().map_err(|_| missing())?;
    if !file.starts_with(&root) || !file.is_file() {
        return Err(missing());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_of_files_inside_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let audio = dir.path().join("audio");
        std::fs::create_dir_all(audio.join("en")).expect("dirs");
        std::fs::write(audio.join("hello.wav"), b"RIFF").expect("write");
        std::fs::write(audio.join("en/bye.wav"), b"RIFF").expect("write");
        std::fs::write(dir.path().join("secret.wav"), b"RIFF").expect("write");
        let resolve = |name: &str| resolve(Some(&audio), Path::new(name), "[agents] audio_dir");

        let hello = resolve("hello.wav").expect("inside");
        assert_eq!(hello, audio.canonicalize().expect("dir").join("hello.wav"));
        assert!(resolve("en/bye.wav").is_ok());
        for escape in [
            "../secret.wav",
            "/etc/passwd",
            "./hello.wav",
            "en/../hello.wav",
            "",
        ] {
            assert!(
                matches!(resolve(escape), Err(AudioFileError::NotPlain { .. })),
                "{escape:?}"
            );
        }
        assert!(matches!(
            resolve("nope.wav"),
            Err(AudioFileError::Missing { .. })
        ));
        assert!(matches!(resolve("en"), Err(AudioFileError::Missing { .. })));
        assert_eq!(
            super::resolve(None, Path::new("hello.wav"), "[agents] audio_dir")
                .expect_err("no directory")
                .to_string(),
            "hello.wav: audio files need [agents] audio_dir on the server"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_out_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let audio = dir.path().join("audio");
        std::fs::create_dir_all(&audio).expect("dir");
        std::fs::write(dir.path().join("recording.wav"), b"RIFF").expect("write");
        std::os::unix::fs::symlink(dir.path().join("recording.wav"), audio.join("link.wav"))
            .expect("symlink");
        assert!(matches!(
            resolve(Some(&audio), Path::new("link.wav"), "[agents] audio_dir"),
            Err(AudioFileError::Missing { .. })
        ));
    }
}

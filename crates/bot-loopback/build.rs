//! Embeds the speech clips listed in assets/clips.tsv (see assets/README.md).

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let assets = dir.join("assets");
    let list = assets.join("clips.tsv");
    println!("cargo:rerun-if-changed={}", list.display());
    let text = std::fs::read_to_string(&list).expect("assets/clips.tsv is readable");
    let mut out = String::from("&[\n");
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (Some(kind), Some(file), Some(said)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!(
                "assets/clips.tsv line {}: expected kind, file, text",
                number + 1
            );
        };
        let kind = match kind {
            "phrase" => "ClipKind::Phrase",
            "word" => "ClipKind::Word",
            other => panic!(
                "assets/clips.tsv line {}: unknown kind {other:?}",
                number + 1
            ),
        };
        let path = assets.join(file);
        assert!(path.is_file(), "{} is missing", path.display());
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ClipSource {{ kind: {kind}, text: {said:?}, wav: include_bytes!({path:?}) }},",
            path = path.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push_str("]\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("clips.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}

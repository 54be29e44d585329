//! Kafka's offset checkpoint files (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`, `replication-offset-checkpoint`):
//!
//! ```text
//! 0                 <- version
//! 2                 <- entry count
//! orders 0 1500     <- topic partition offset
//! orders 1 1432
//! ```
//!
//! Written to a temporary file, fsynced and renamed, so a crash leaves the old or the new.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

/// (topic, partition) → offset.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Reads a checkpoint file; a missing file is empty, a malformed one is an error.
pub fn read(path: &Path) -> io::Result<Offsets> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Offsets::new()),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("0") {
        return Err(bad("unsupported checkpoint version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("missing entry count"))?;
    let mut out = Offsets::new();
    for line in lines.take(count) {
        let mut parts = line.split_whitespace();
        let (Some(topic), Some(p), Some(o)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("malformed entry"));
        };
        let p: i32 = p.parse().map_err(|_| bad("bad partition"))?;
        let o: i64 = o.parse().map_err(|_| bad("bad offset"))?;
        out.insert((topic.to_string(), p), o);
    }
    if out.len() != count {
        return Err(bad("fewer entries than the count says"));
    }
    Ok(out)
}

/// Writes a checkpoint file atomically.
pub fn write(path: &Path, offsets: &Offsets) -> io::Result<()> {
    let mut text = format!("0\n{}\n", offsets.len());
    for ((topic, p), o) in offsets {
        text.push_str(&format!("{topic} {p} {o}\n"));
    }
    write_atomically(path, text.as_bytes())
}

/// Writes `bytes` to `path` through a fsynced temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("recovery-point-offset-checkpoint");
        let mut o = Offsets::new();
        o.insert(("a-b".into(), 0), 10);
        o.insert(("c".into(), 3), 0);
        write(&p, &o).unwrap();
        assert_eq!(read(&p).unwrap(), o);
        std::fs::write(&p, "0\n2\na 0 1\n").unwrap();
        assert!(read(&p).is_err());
        assert!(read(&dir.path().join("missing")).unwrap().is_empty());
    }
}

//! Unsent messages, kept on disk (`drafts.json` in the state dir) so that a dropped SSH
//! connection, a crash or a quit loses nothing: the next `i` on that session brings the text
//! back, in this cockpit or the next one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Where the drafts live.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("drafts.json")
}

/// The drafts saved at `path`: none when there is no file. A file that cannot be read is moved
/// aside (to `drafts.json.bad`, never deleted) and said in the error.
pub fn load(path: &Path) -> Result<HashMap<Uuid, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_str(&text).map_err(|e| {
        let aside = path.with_extension("json.bad");
        let moved = std::fs::rename(path, &aside)
            .map(|()| format!("; it is kept as {}", aside.display()))
            .unwrap_or_default();
        format!(
            "cannot read the saved drafts in {}: {e}{moved}",
            path.display()
        )
    })
}

/// Writes `drafts` to `path` whole or not at all (a temporary file renamed over it); no
/// drafts removes the file.
pub fn save(path: &Path, drafts: &HashMap<Uuid, String>) -> Result<(), String> {
    if drafts.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {e}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let text = serde_json::to_string_pretty(drafts).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    write_private(&tmp, text.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot save the drafts to {}: {e}", path.display()))
}

/// Writes a file only its owner can read: a draft may hold anything the operator typed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_survive_a_restart_and_a_bad_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let at = path(&dir.path().join("state"));
        assert_eq!(load(&at), Ok(HashMap::new()));
        let drafts = HashMap::from([(Uuid::from_u128(7), "half a thought\nand more".to_string())]);
        assert_eq!(save(&at, &drafts), Ok(()));
        assert_eq!(load(&at), Ok(drafts));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&at).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600), "only its owner reads it");
        }
        assert_eq!(save(&at, &HashMap::new()), Ok(()));
        assert!(!at.exists());
        std::fs::write(&at, "{not json").unwrap_or_else(|e| panic!("{e}"));
        let err = load(&at).err().unwrap_or_default();
        assert!(err.contains("kept as"), "{err}");
        assert!(at.with_extension("json.bad").exists());
        assert_eq!(load(&at), Ok(HashMap::new()));
    }
}

//! The provenance chain of a run folder, one mechanism for every stage: each stage's output folder
//! ends with a manifest whose [`Provenance`] records what the output was made from (the
//! classifier's SHA-256, the digests of the upstream manifests it read, the options that change
//! its content) and what it holds (every file's SHA-256 and size), as build systems key an output
//! by the digests of its inputs. A stage writes through a [`StageOutput`]: it takes the folder's
//! lock, marks the output incomplete (its manifest removed), clears the temporary files of a
//! killed run, records each file it writes, and writes the manifest last. A reader checks the
//! files against the manifest ([`Provenance::verify_files`]) and the recorded inputs against
//! what it has ([`Provenance::check_input`]), and refuses a mismatch with [`Error::Provenance`],
//! naming the file, what differs and the stage to rerun. `docs/artefacts.md` lists each
//! artefact's fields.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::lock::{exclusive, ExclusiveLock};
use crate::error::{Error, Result};
use crate::models::checkpoint::file_sha256;

/// A file's content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl FileDigest {
    /// The digest of the file at `path`.
    pub fn of(path: &Path) -> Result<FileDigest> {
        let bytes = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        Ok(FileDigest {
            sha256: file_sha256(path)?,
            bytes,
        })
    }
}

/// What an artefact was made from and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The stage (binary) that wrote it.
    pub stage: String,
    /// SHA-256 of the classifier's weights file it comes from.
    pub classifier_sha256: String,
    /// The upstream manifests it was made from: a name (their path relative to the run folder,
    /// e.g. `features/manifest.json`) and the SHA-256 of their bytes.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// The options that change its content, as given.
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
    /// Every file of the output (path relative to the output folder) and its digest.
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
    /// Version of resflow that wrote it.
    pub library_version: String,
}

impl Provenance {
    /// An empty record for `stage` on the classifier whose weights have `classifier_sha256`.
    pub fn new(stage: &str, classifier_sha256: &str) -> Provenance {
        Provenance {
            stage: stage.to_string(),
            classifier_sha256: classifier_sha256.to_string(),
            inputs: BTreeMap::new(),
            options: BTreeMap::new(),
            files: BTreeMap::new(),
            library_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Records option `name` with `value`.
    pub fn option(&mut self, name: &str, value: impl Serialize) -> Result<()> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::BadData(format!("option `{name}`: {e}")))?;
        self.options.insert(name.to_string(), value);
        Ok(())
    }

    /// Records the upstream manifest at `path` under `name`.
    pub fn input(&mut self, name: &str, path: &Path) -> Result<()> {
        self.inputs.insert(name.to_string(), file_sha256(path)?);
        Ok(())
    }

    /// Checks the files of output folder `dir` listed under `names` (every listed file when
    /// `names` is `None`) against their recorded digests. `manifest` names the manifest in the
    /// error, `stage` the stage to rerun.
    pub fn verify_files(
        &self,
        dir: &Path,
        names: Option<&[&str]>,
        manifest: &Path,
        stage: &str,
    ) -> Result<()> {
        let listed: Vec<&str> = match names {
            Some(names) => names.to_vec(),
            None => self.files.keys().map(String::as_str).collect(),
        };
        for name in listed {
            let path = dir.join(name);
            let Some(expected) = self.files.get(name) else {
                return Err(Error::provenance(
                    &path,
                    format!(
                        "not listed in {} (the output of another run?); rerun {stage}",
                        manifest.display()
                    ),
                ));
            };
            if !path.exists() {
                return Err(Error::missing(
                    &path,
                    format!(
                        "listed in {} but missing; rerun {stage}",
                        manifest.display()
                    ),
                ));
            }
            let found = FileDigest::of(&path)?;
            if &found != expected {
                let what = if found.bytes != expected.bytes {
                    format!(
                        "{} bytes where {} records {} (truncated, or another run's file)",
                        found.bytes,
                        manifest.display(),
                        expected.bytes
                    )
                } else {
                    format!(
                        "its SHA-256 differs from the one {} records (changed, or another run's \
                         file)",
                        manifest.display()
                    )
                };
                return Err(Error::provenance(&path, format!("{what}; rerun {stage}")));
            }
        }
        Ok(())
    }

    /// Checks that the upstream artefact recorded as `name` is the one at `path` now (a file by its
    /// SHA-256, a folder by [`folder_digest`]): an error naming `artefact` (this output's
    /// manifest), what changed and the stage that remakes it.
    pub fn check_input(&self, name: &str, path: &Path, artefact: &Path, stage: &str) -> Result<()> {
        let Some(recorded) = self.inputs.get(name) else {
            return Err(Error::provenance(
                artefact,
                format!("records no `{name}` among its inputs; rerun {stage}"),
            ));
        };
        if !path.exists() {
            return Err(Error::missing(
                path,
                format!(
                    "{} was made from it, but it is gone; rerun the stage that writes it, then \
                     {stage}",
                    artefact.display()
                ),
            ));
        }
        let now = if path.is_dir() {
            folder_digest(path)?
        } else {
            file_sha256(path)?
        };
        if &now != recorded {
            return Err(Error::provenance(
                artefact,
                format!(
                    "made from another {} than the one there now (rewritten, retrained or \
                     replaced since); rerun {stage}",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Checks that the artefact comes from the classifier whose weights have `sha256`.
    pub fn check_classifier(&self, sha256: &str, artefact: &Path, stage: &str) -> Result<()> {
        if self.classifier_sha256 != sha256 {
            return Err(Error::provenance(
                artefact,
                format!(
                    "made from other classifier weights than those in use (their SHA-256 \
                     differs: the classifier was retrained or replaced since); rerun {stage}"
                ),
            ));
        }
        Ok(())
    }
}

/// A stage writing its output folder: holds the folder's lock, and the provenance that the
/// manifest records at [`StageOutput::finish`].
#[derive(Debug)]
pub struct StageOutput {
    dir: PathBuf,
    manifest: PathBuf,
    /// What the output is made from and holds, filled while the stage runs.
    pub provenance: Provenance,
    _lock: ExclusiveLock,
}

/// A stage output whose lock is held but whose folder is not touched yet ([`StageOutput::lock`]):
/// a stage that writes several folders takes all their locks before it empties any
/// ([`PendingOutput::begin`]), so that a second writer of one of them stops it before it has
/// changed anything.
#[derive(Debug)]
pub struct PendingOutput {
    dir: PathBuf,
    manifest: PathBuf,
    provenance: Provenance,
    lock: ExclusiveLock,
}

impl PendingOutput {
    /// Empties the folder, manifest first (the folder is incomplete until
    /// [`StageOutput::finish`]; no file of an earlier run, nor the temporary files of a killed
    /// one, stays), and starts writing it.
    pub fn begin(self) -> Result<StageOutput> {
        let PendingOutput {
            dir,
            manifest,
            provenance,
            lock,
        } = self;
        match std::fs::remove_file(&manifest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&manifest, e)),
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(StageOutput {
            dir,
            manifest,
            provenance,
            _lock: lock,
        })
    }
}

impl StageOutput {
    /// Takes the lock `{dir}.lock` of folder `dir` whose manifest is `manifest` (inside `dir`),
    /// without touching the folder: a second writer stops at once. `doing` says what the stage
    /// does, for the lock's message. [`PendingOutput::begin`] starts writing.
    pub fn lock(
        dir: &Path,
        manifest: &Path,
        provenance: Provenance,
        doing: &str,
    ) -> Result<PendingOutput> {
        let lock = exclusive(&crate::io::sibling(dir, "lock"), doing)?;
        Ok(PendingOutput {
            dir: dir.to_path_buf(),
            manifest: manifest.to_path_buf(),
            provenance,
            lock,
        })
    }

    /// Starts writing folder `dir` whose manifest is `manifest` (inside `dir`): takes the lock
    /// `{dir}.lock` (a second writer stops at once), then empties the folder, manifest first (the
    /// folder is incomplete until [`StageOutput::finish`]; no file of an earlier run, nor the
    /// temporary files of a killed one, stays). `doing` says what the stage does, for the lock's
    /// message.
    pub fn begin(
        dir: &Path,
        manifest: &Path,
        provenance: Provenance,
        doing: &str,
    ) -> Result<StageOutput> {
        Self::lock(dir, manifest, provenance, doing)?.begin()
    }

    /// The output folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the file at `path` (inside the output folder) as part of the output.
    pub fn record(&mut self, path: &Path) -> Result<()> {
        let name = path
            .strip_prefix(&self.dir)
            .map_err(|_| {
                Error::BadData(format!(
                    "{} is not inside the output folder {}",
                    path.display(),
                    self.dir.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        self.provenance.files.insert(name, FileDigest::of(path)?);
        Ok(())
    }

    /// Writes the manifest last, `manifest` given the provenance gathered: the output is
    /// complete. Returns the manifest and releases the lock.
    pub fn finish<T: Serialize>(self, manifest: impl FnOnce(Provenance) -> T) -> Result<T> {
        let manifest = manifest(self.provenance);
        crate::io::write_json(&self.manifest, &manifest)?;
        Ok(manifest)
    }
}

/// Reads the manifest at `path`, written by `stage`: a missing manifest means the stage has not
/// run to its end (never, or it was interrupted), and one that does not parse (truncated,
/// corrupt, written by an older version, a key missing) is refused with the stage to rerun.
pub fn read_manifest<T: DeserializeOwned>(path: &Path, stage: &str) -> Result<T> {
    if !path.exists() {
        return Err(Error::missing(
            path,
            format!(
                "not here: {stage} has not run to its end for this network and data set (never                  run, interrupted, or running now); run {stage} first"
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::format(
            path,
            format!(
                "not a manifest this version can use ({e}): truncated, corrupt or written by                  another version of resflow; rerun {stage}"
            ),
        )
    })
}

/// One digest of a whole folder (e.g. a trained flow): the SHA-256 of its files' names and
/// digests, in name order, sub-folders and lock files excluded.
pub fn folder_digest(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        hasher.update(name.as_bytes());
        hasher.update(file_sha256(&dir.join(&name))?.as_bytes());
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Removes the temporary files of interrupted atomic writes (`.{name}.tmp{pid}`, see
/// [`crate::io::write_atomically`]) under `dir`, which may not exist yet.
pub fn remove_temporary_files(dir: &Path) -> Result<()> {
    for entry in crate::io::dir_entries(dir)? {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            remove_temporary_files(&path)?;
        } else if crate::io::is_temporary_name(&name) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Removes the temporary files that interrupted atomic writes of `path` left next to it
/// (`.{name}.tmp{pid}`; see [`crate::io::write_atomically`]), for outputs that are single files
/// in a shared folder (a stage's lock must be held).
pub fn remove_temporary_siblings(path: &Path) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dotted = format!(".{}", name.to_string_lossy());
    for entry in crate::io::dir_entries(dir)? {
        let file = entry.file_name().to_string_lossy().into_owned();
        // `.{name}.tmp{pid}` exactly, not another file's temporary file.
        let of_path = file
            .rsplit_once(".tmp")
            .is_some_and(|(head, _)| head == dotted);
        if of_path && crate::io::is_temporary_name(&file) {
            let stale = entry.path();
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(dir: &Path) -> StageOutput {
        StageOutput::begin(
            dir,
            &dir.join("manifest.json"),
            Provenance::new("rf-test", "abc"),
            "rf-test is writing here",
        )
        .unwrap()
    }

    #[test]
    fn a_stage_output_is_locked_and_incomplete_until_finished_and_starts_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("manifest.json"), "{}").unwrap();
        std::fs::write(dir.join("sub/.a.npy.tmp123"), "x").unwrap();
        std::fs::write(dir.join("old.npy"), "y").unwrap();
        let mut out = output(&dir);
        assert!(!dir.join("manifest.json").exists());
        assert!(!dir.join("sub/.a.npy.tmp123").exists() && !dir.join("old.npy").exists());
        std::fs::write(dir.join("keep.npy"), "y").unwrap();
        let second = StageOutput::begin(
            &dir,
            &dir.join("manifest.json"),
            Provenance::new("rf-test", "abc"),
            "rf-test is writing here",
        );
        assert!(second.unwrap_err().to_string().contains("out.lock"));
        out.record(&dir.join("keep.npy")).unwrap();
        out.finish(|provenance| provenance).unwrap();
        let read: Provenance = crate::io::read_json(&dir.join("manifest.json")).unwrap();
        assert_eq!(read.files["keep.npy"].bytes, 1);
        read.verify_files(&dir, None, &dir.join("manifest.json"), "rf-test")
            .unwrap();
        output(&dir); // the lock was released
    }

    #[test]
    fn a_locked_output_is_untouched_until_begun() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), "{}").unwrap();
        let pending = StageOutput::lock(
            &dir,
            &dir.join("manifest.json"),
            Provenance::new("rf-test", "abc"),
            "rf-test is writing here",
        )
        .unwrap();
        assert!(dir.join("manifest.json").exists());
        let second = StageOutput::begin(
            &dir,
            &dir.join("manifest.json"),
            Provenance::new("rf-test", "abc"),
            "rf-test is writing here",
        );
        assert!(second.unwrap_err().to_string().contains("out.lock"));
        assert!(dir.join("manifest.json").exists());
        pending.begin().unwrap();
        assert!(!dir.join("manifest.json").exists());
    }

    #[test]
    fn only_the_temporary_files_of_one_output_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let names = [
            ".results.json.tmp123",
            ".results.json.tmpx",
            ".results.md.tmp123",
            ".results.json.old",
            "results.json",
        ];
        for name in names {
            std::fs::write(tmp.path().join(name), "x").unwrap();
        }
        remove_temporary_siblings(&tmp.path().join("results.json")).unwrap();
        let left: Vec<bool> = names.iter().map(|n| tmp.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true, true]);
        remove_temporary_siblings(&tmp.path().join("absent/results.json")).unwrap();
    }

    #[test]
    fn changed_truncated_missing_and_unlisted_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.npy"), "abcd").unwrap();
        std::fs::write(dir.join("b.npy"), "efgh").unwrap();
        let mut p = Provenance::new("rf-test", "abc");
        for name in ["a.npy", "b.npy"] {
            p.files
                .insert(name.into(), FileDigest::of(&dir.join(name)).unwrap());
        }
        let manifest = dir.join("manifest.json");
        let check = |names: Option<&[&str]>| {
            p.verify_files(dir, names, &manifest, "rf-test")
                .unwrap_err()
                .to_string()
        };
        std::fs::write(dir.join("a.npy"), "abcx").unwrap();
        assert!(check(None).contains("SHA-256 differs"), "{}", check(None));
        std::fs::write(dir.join("a.npy"), "ab").unwrap();
        assert!(check(None).contains("2 bytes"), "{}", check(None));
        std::fs::remove_file(dir.join("a.npy")).unwrap();
        assert!(check(None).contains("missing; rerun rf-test"));
        assert!(check(Some(&["c.npy"])).contains("not listed"));
        p.verify_files(dir, Some(&["b.npy"]), &manifest, "rf-test")
            .unwrap();
    }

    #[test]
    fn inputs_and_classifier_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let upstream = tmp.path().join("manifest.json");
        std::fs::write(&upstream, "one").unwrap();
        let mut p = Provenance::new("rf-test", "abc");
        p.input("features/manifest.json", &upstream).unwrap();
        let me = tmp.path().join("scores.json");
        p.check_input("features/manifest.json", &upstream, &me, "rf-score")
            .unwrap();
        std::fs::write(&upstream, "two").unwrap();
        let e = p
            .check_input("features/manifest.json", &upstream, &me, "rf-score")
            .unwrap_err();
        assert!(matches!(e, Error::Provenance { .. }), "{e}");
        assert!(e.to_string().contains("rerun rf-score"), "{e}");
        assert!(p.check_classifier("abc", &me, "rf-score").is_ok());
        let e = p.check_classifier("abd", &me, "rf-score").unwrap_err();
        assert!(e.to_string().contains("SHA-256 differs"), "{e}");
    }
}

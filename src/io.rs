//! File helpers shared by every module that writes files: atomic writes (temporary file, then
//! rename; a folder through a swap) and conversion between `tch` tensors and numpy `.npy` files.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Writes a file through `write` into a temporary sibling, then renames it into place, so that a
/// reader never sees a partial file; on error the temporary file is removed, nothing is left at
/// `path`, and the error names `path` (not the temporary file). Creates the parent folder.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = temporary_sibling(path);
    let result = write(&tmp)
        .map_err(|e| e.renamed(&tmp, path))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomically`] through a buffered writer.
pub fn write_buffered(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut w = BufWriter::new(File::create(tmp).map_err(|e| Error::io(tmp, e))?);
        write(&mut w)?;
        w.flush().map_err(|e| Error::io(tmp, e))
    })
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TEMPORARY_MARK}{}", std::process::id()))
}

/// What [`write_atomically`]'s temporary file names carry before the writer's process id.
const TEMPORARY_MARK: &str = ".tmp";

/// Whether `file_name` is a temporary file of [`write_atomically`] (`.{name}.tmp{pid}`), which a
/// killed process leaves behind.
pub fn is_temporary_name(file_name: &str) -> bool {
    file_name.starts_with('.')
        && file_name
            .rsplit_once(TEMPORARY_MARK)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// `{path}.{suffix}`: a sibling named after `path` (e.g. a folder's lock file or previous version).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", path.display()))
}

/// Where [`write_folder_atomically`] keeps a folder's previous version during its swap,
/// `{dir}.old`.
pub fn previous_folder(dir: &Path) -> PathBuf {
    sibling(dir, "old")
}

/// Where [`write_folder_atomically`] writes a folder's new version, `{dir}.partial`.
pub fn partial_folder(dir: &Path) -> PathBuf {
    sibling(dir, "partial")
}

/// Writes the folder `dir` through `write` into a fresh sibling (`{dir}.partial`), then swaps it
/// in: the current `dir` is moved to [`previous_folder`], the new one renamed into place, the
/// previous one removed. A crash never leaves a half-written folder at `dir`;
/// [`recover_folder_swap`] completes a swap that one interrupted between its two renames. On
/// error, or when `write` fails (a full disk), the partial folder is removed.
pub fn write_folder_atomically(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (partial, old) = (partial_folder(dir), previous_folder(dir));
    let _ = std::fs::remove_dir_all(&partial);
    if let Err(e) = write(&partial) {
        // A full disk or a killed write leaves no half folder behind.
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&partial, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Completes a [`write_folder_atomically`] that a crash interrupted between its two renames:
/// where `dir` is missing but its previous version is there and `complete` says it is whole,
/// that one is put back. A leftover partial folder is removed.
pub fn recover_folder_swap(dir: &Path, complete: impl Fn(&Path) -> bool) -> Result<()> {
    let old = previous_folder(dir);
    if !dir.exists() && complete(&old) {
        std::fs::rename(&old, dir).map_err(|e| Error::io(dir, e))?;
    }
    let _ = std::fs::remove_dir_all(partial_folder(dir));
    Ok(())
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::format(path, e.to_string()))?;
    write_text(path, &text)
}

/// Writes `text`, atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| Error::io(tmp, e))
    })
}

/// The entries of folder `dir`, in the order the file system lists them; none when `dir` does not
/// exist. Errors name `dir`.
pub fn dir_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map_err(|e| Error::io(dir, e))).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Reads JSON into `T`, naming the file on failure ([`read_json_with`] with the remedy "write it
/// again with the command that made it").
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    read_json_with(path, "write it again with the command that made it")
}

/// Reads JSON into `T`. A missing file is a [`Error::MissingArtefact`], one that does not parse
/// (truncated, corrupt, of another version) a [`Error::Format`]; both name the file and say
/// `remedy` (e.g. "retrain the layer with rf-train --layer 2").
pub fn read_json_with<T: serde::de::DeserializeOwned>(path: &Path, remedy: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::missing(path, format!("not here; {remedy}"))
        } else {
            Error::io(path, e)
        }
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::format(
            path,
            format!(
                "not the JSON expected ({e}): truncated, corrupt or of another version; {remedy}"
            ),
        )
    })
}

/// Reads every tensor of a safetensors file. A missing file is a [`Error::MissingArtefact`], an
/// unreadable one (truncated, corrupt, not safetensors) a [`Error::Format`]; both say `remedy`
/// (e.g. "rerun rf-prepare").
pub fn read_safetensors(path: &Path, remedy: &str) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        return Err(Error::missing(path, format!("not here; {remedy}")));
    }
    Tensor::read_safetensors(path).map_err(|e| {
        let cause = e.to_string();
        let cause = cause.lines().next().unwrap_or_default();
        Error::format(
            path,
            format!("not a complete safetensors file ({cause}): truncated or corrupt; {remedy}"),
        )
    })
}

/// Writes a float tensor as a float32 `.npy` file, atomically.
pub fn write_npy_f32(path: &Path, tensor: &Tensor) -> Result<()> {
    let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(tensor.to_kind(Kind::Float).flatten(0, -1))?;
    let array = ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches the data");
    write_atomically(path, |tmp| {
        ndarray_npy::write_npy(tmp, &array).map_err(|e| Error::format(tmp, e.to_string()))
    })
}

/// Writes a float tensor as a float64 `.npy` file, atomically.
pub fn write_npy_f64(path: &Path, tensor: &Tensor) -> Result<()> {
    let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f64>::try_from(tensor.to_kind(Kind::Double).flatten(0, -1))?;
    let array = ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches the data");
    write_atomically(path, |tmp| {
        ndarray_npy::write_npy(tmp, &array).map_err(|e| Error::format(tmp, e.to_string()))
    })
}

/// Writes an integer tensor as an int64 `.npy` file, atomically.
pub fn write_npy_i64(path: &Path, tensor: &Tensor) -> Result<()> {
    let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<i64>::try_from(tensor.to_kind(Kind::Int64).flatten(0, -1))?;
    let array = ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches the data");
    write_atomically(path, |tmp| {
        ndarray_npy::write_npy(tmp, &array).map_err(|e| Error::format(tmp, e.to_string()))
    })
}

/// Reads a float32 `.npy` file into a tensor.
pub fn read_npy_f32(path: &Path) -> Result<Tensor> {
    let array: ArrayD<f32> = ndarray_npy::read_npy(path)
        .map_err(|e| Error::format(path, format!("expected a float32 .npy array: {e}")))?;
    let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
    let data: Vec<f32> = array.iter().copied().collect();
    Ok(Tensor::from_slice(&data).view(&shape[..]))
}

/// Reads an int64 `.npy` file into a tensor.
pub fn read_npy_i64(path: &Path) -> Result<Tensor> {
    let array: ArrayD<i64> = ndarray_npy::read_npy(path)
        .map_err(|e| Error::format(path, format!("expected an int64 .npy array: {e}")))?;
    let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
    let data: Vec<i64> = array.iter().copied().collect();
    Ok(Tensor::from_slice(&data).view(&shape[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, defect 11: a failed write names the file being written, not its temporary
    /// sibling, and leaves neither behind.
    #[test]
    fn failed_writes_name_the_destination_and_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("resflow-io-{}", std::process::id()));
        let path = dir.join("results.json");
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, b"partial").map_err(|e| Error::io(tmp, e))?;
            Err(Error::io(tmp, std::io::Error::other("disk full")))
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(!err.contains(".tmp"), "{err}");
        assert!(!path.exists() && !temporary_sibling(&path).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn folders_are_swapped_in_whole_and_an_interrupted_swap_is_completed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("layer_0");
        let write = |text: &'static str| {
            move |to: &Path| {
                std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
                std::fs::write(to.join("a"), text).map_err(|e| Error::io(to, e))
            }
        };
        let read = |d: &Path| std::fs::read_to_string(d.join("a")).unwrap();
        write_folder_atomically(&dir, write("one")).unwrap();
        write_folder_atomically(&dir, write("two")).unwrap();
        assert_eq!(read(&dir), "two");
        assert!(!previous_folder(&dir).exists() && !partial_folder(&dir).exists());
        // A failed write leaves the folder as it was and no partial one.
        let failed = write_folder_atomically(&dir, |to: &Path| {
            write("three")(to)?;
            Err(Error::io(to, std::io::Error::other("disk full")))
        });
        assert!(failed.is_err());
        assert_eq!(read(&dir), "two");
        assert!(!partial_folder(&dir).exists());
        // A crash between the renames: the folder moved aside, the new one still partial.
        std::fs::rename(&dir, previous_folder(&dir)).unwrap();
        write("four")(&partial_folder(&dir)).unwrap();
        recover_folder_swap(&dir, |old: &Path| old.join("a").exists()).unwrap();
        assert_eq!(read(&dir), "two");
        assert!(!previous_folder(&dir).exists() && !partial_folder(&dir).exists());
    }
}

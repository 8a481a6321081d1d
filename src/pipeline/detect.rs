//! The detector stage (`rf-detect score`): a bundle's detector on new images, streamed in
//! batches from files, folders (any tree) or a list of paths on stdin, one CSV or JSON Lines row
//! per image. An image that cannot be read is a row with an error, not the end of the run.
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use tch::Device;

use crate::bundle::{OodDetector, Scores};
use crate::data::folder::{image_files, read_resized, to_tensor};
use crate::detect::DetectorKind;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// How the rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

/// The stage's options.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// The bundle folder (`rf-detect fit`).
    pub bundle: PathBuf,
    /// The bundle's detector to use; `None`: its default.
    pub detector: Option<DetectorKind>,
    /// The classifier, where it is no longer where the bundle says.
    pub classifier: Option<PathBuf>,
    /// Image files, folders, or `-` for a list of paths on stdin (one per line).
    pub inputs: Vec<String>,
    /// Row format.
    pub format: OutputFormat,
    /// Images per batch.
    pub batch_size: usize,
    /// Compute device.
    pub device: Device,
}

/// What [`score`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreSummary {
    /// Images scored.
    pub scored: usize,
    /// Inputs that could not be read (a row with an error each).
    pub failed: usize,
    /// Images called OOD.
    pub ood: usize,
}

/// One output row.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    path: String,
    class: Option<i64>,
    probability: Option<f64>,
    score: Option<f64>,
    percentile: Option<f64>,
    verdict: Option<&'static str>,
    error: Option<String>,
}

const HEADER: &str = "path,class,probability,score,percentile,verdict,error";

/// Scores every image of `options.inputs` with the bundle's detector, writing one row per input
/// to `out` as it goes (constant memory: a batch of images at a time).
pub fn score(
    options: &ScoreOptions,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<ScoreSummary> {
    if options.inputs.is_empty() {
        return Err(Error::bad_option(
            "INPUT",
            "no input: give image files, folders of images, or - to read paths from stdin",
        ));
    }
    if options.batch_size == 0 {
        return Err(Error::bad_option("--batch-size", "must be at least 1"));
    }
    let detector = OodDetector::load(
        &options.bundle,
        options.detector,
        options.classifier.as_deref(),
        options.device,
    )?;
    // Files and folders are listed first (for the progress bar's length); paths from stdin are
    // read as they come.
    let given = expand(options.inputs.iter().filter(|i| *i != "-"))?;
    let from_stdin = options.inputs.iter().any(|i| i == "-");
    let total = if from_stdin { 0 } else { given.len() };
    let read = stdin.lines().filter_map(|line| match line {
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(Ok(PathBuf::from(l.trim()))),
        Err(e) => Some(Err(Error::io("<stdin>", e))),
    });
    let stdin_paths: Box<dyn Iterator<Item = Result<PathBuf>>> = if from_stdin {
        Box::new(read)
    } else {
        Box::new(std::iter::empty())
    };
    let sink = |e: std::io::Error| Error::io("<output>", e);
    if options.format == OutputFormat::Csv {
        writeln!(out, "{HEADER}").map_err(sink)?;
    }
    let mut summary = ScoreSummary {
        scored: 0,
        failed: 0,
        ood: 0,
    };
    let mut flush = |batch: &mut Vec<PathBuf>, summary: &mut ScoreSummary| -> Result<()> {
        for row in score_batch(&detector, batch)? {
            summary.failed += usize::from(row.error.is_some());
            summary.scored += usize::from(row.error.is_none());
            summary.ood += usize::from(row.verdict == Some("ood"));
            write_row(out, options.format, &row).map_err(sink)?;
        }
        batch.clear();
        Ok(())
    };
    progress.start("images", total);
    let mut batch = Vec::with_capacity(options.batch_size);
    for path in given.into_iter().map(Ok).chain(stdin_paths) {
        batch.push(path?);
        if batch.len() == options.batch_size {
            progress.advance(batch.len());
            flush(&mut batch, &mut summary)?;
        }
    }
    progress.advance(batch.len());
    flush(&mut batch, &mut summary)?;
    progress.finish();
    if summary.scored + summary.failed == 0 {
        return Err(Error::bad_option(
            "INPUT",
            "no image among the inputs (folders are searched for .jpg, .jpeg and .png files)",
        ));
    }
    Ok(summary)
}

/// The files of `inputs`: files as given, folders as every image under them (sorted).
fn expand<'a>(inputs: impl Iterator<Item = &'a String>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            files.extend(image_files(path)?);
        } else {
            files.push(path.to_path_buf());
        }
    }
    Ok(files)
}

/// Reads the images of `paths` (each that cannot be read becomes an error row) and scores the
/// others as one batch; rows in input order.
fn score_batch(detector: &OodDetector, paths: &[PathBuf]) -> Result<Vec<Row>> {
    let side = detector.input_side() as u32;
    let mut images = Vec::new();
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|p| {
            let mut row = Row {
                path: p.display().to_string(),
                class: None,
                probability: None,
                score: None,
                percentile: None,
                verdict: None,
                error: None,
            };
            match read_resized(p, side) {
                Ok(image) => images.push(image),
                Err(e) => row.error = Some(e.to_string()),
            }
            row
        })
        .collect();
    if images.is_empty() {
        return Ok(rows);
    }
    let Scores {
        predicted,
        probability,
        score,
        percentile,
        ood,
    } = detector.score(&to_tensor(&images))?;
    let readable = rows.iter_mut().filter(|r| r.error.is_none());
    for (i, row) in readable.enumerate() {
        row.class = Some(predicted[i]);
        row.probability = Some(probability[i]);
        row.score = Some(score[i]);
        row.percentile = Some(percentile[i]);
        row.verdict = Some(if ood[i] { "ood" } else { "in" });
    }
    Ok(rows)
}

/// Writes `row` as CSV (fields quoted where needed) or as one JSON line.
fn write_row(out: &mut dyn Write, format: OutputFormat, row: &Row) -> std::io::Result<()> {
    match format {
        OutputFormat::JsonLines => {
            let line = serde_json::to_string(row).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")
        }
        OutputFormat::Csv => {
            let number = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            let fields = [
                csv_field(&row.path),
                row.class.map(|c| c.to_string()).unwrap_or_default(),
                number(row.probability),
                number(row.score),
                number(row.percentile),
                row.verdict.unwrap_or_default().to_string(),
                csv_field(row.error.as_deref().unwrap_or_default()),
            ];
            writeln!(out, "{}", fields.join(","))
        }
    }
}

/// A CSV field: quoted (quotes doubled) when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_where_needed() {
        assert_eq!(csv_field("a/b.png"), "a/b.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}

//! Progress reporting: a trait the library's long stages report to, with indicatif bars (one look
//! across all stages) for the binaries and a silent implementation for tests.
use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `prefix`.
pub fn bar(len: u64, prefix: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:>20} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.into());
    bar
}

/// Receives the progress of a stage made of consecutive tasks.
pub trait Progress {
    /// A task of `len` steps starts.
    fn start(&mut self, name: &str, len: usize);
    /// `n` more steps are done.
    fn advance(&mut self, n: usize);
    /// The current task is done.
    fn finish(&mut self);
}

/// One progress bar per task, on stderr.
#[derive(Default)]
pub struct Bars(Option<ProgressBar>);

impl Progress for Bars {
    fn start(&mut self, name: &str, len: usize) {
        self.finish();
        self.0 = Some(bar(len as u64, name));
    }
    fn advance(&mut self, n: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(n as u64);
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish();
        }
    }
}

/// No output (tests, scripts).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: &str, _: usize) {}
    fn advance(&mut self, _: usize) {}
    fn finish(&mut self) {}
}

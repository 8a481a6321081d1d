//! Progress reporting, the one mechanism every long stage uses: the library reports tasks, steps,
//! status messages and log lines to a [`Progress`]; the binaries pass [`Bars`] (indicatif bars on
//! stderr, one look across all stages) and tests pass [`Quiet`].
use indicatif::{ProgressBar, ProgressStyle};

/// Receives the progress of a stage made of consecutive tasks.
pub trait Progress {
    /// A task of `len` steps starts (the previous one, if any, is finished).
    fn start(&mut self, name: &str, len: usize);
    /// `n` more steps are done.
    fn advance(&mut self, n: usize);
    /// A short status shown beside the current task (a loss, an accuracy).
    fn message(&mut self, _text: &str) {}
    /// A line that stays in the output (an epoch's summary, a notice).
    fn note(&mut self, _line: &str) {}
    /// The current task is done.
    fn finish(&mut self);
}

/// One progress bar per task, on stderr; notes are printed above the bar.
#[derive(Default)]
pub struct Bars(Option<ProgressBar>);

impl Bars {
    fn bar(len: u64, prefix: &str) -> ProgressBar {
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template(
            "{prefix:>20} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
        )
        .expect("valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(prefix.to_string());
        bar
    }
}

impl Progress for Bars {
    fn start(&mut self, name: &str, len: usize) {
        self.finish();
        self.0 = Some(Self::bar(len as u64, name));
    }
    fn advance(&mut self, n: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(n as u64);
        }
    }
    fn message(&mut self, text: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(text.to_string());
        }
    }
    fn note(&mut self, line: &str) {
        match &self.0 {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
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

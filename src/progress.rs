//! Progress bars with one look across all stages (hidden when stderr is not a terminal).
use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `prefix`.
pub fn bar(len: u64, prefix: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:>16} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.into());
    bar
}

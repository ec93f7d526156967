//! Initial-copy progress bars on a terminal: one `indicatif` bar per table a source is copying
//! (rows, rate, ETA), with log lines printed above them.
//!
//! Only when stderr is a terminal and logs are text: the bars are drawn on stderr, and the log
//! writer suspends them while it prints a line, so the two never interleave.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use moonlink_pipeline::SourceRegistry;

/// The bars, and the log writer that prints above them.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)),
        }
    }

    /// Follows every source's reported copy progress until the process ends.
    pub fn follow(&self, sources: SourceRegistry) {
        let multi = self.multi.clone();
        tokio::spawn(async move {
            let mut bars: BTreeMap<(String, String), ProgressBar> = BTreeMap::new();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                for source in sources.list() {
                    for (table, p) in &source.copy_progress {
                        let key = (source.name.clone(), table.clone());
                        if p.done {
                            if let Some(bar) = bars.get(&key) {
                                if !bar.is_finished() {
                                    bar.set_position(p.rows_copied);
                                    bar.finish_with_message("copied");
                                }
                            }
                            continue;
                        }
                        // Positioned before it is first drawn: a bar drawn at 0 % and then
                        // overtaken by log lines would stay behind in the scrollback.
                        let bar = bars.entry(key).or_insert_with(|| {
                            let bar = new_bar(table, p.rows_total);
                            bar.set_position(p.rows_copied);
                            multi.add(bar)
                        });
                        if let Some(total) = p.rows_total {
                            bar.set_length(total.max(p.rows_copied));
                        }
                        bar.set_position(p.rows_copied);
                    }
                }
            }
        });
    }
}

fn new_bar(table: &str, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{prefix:>24} [{bar:30}] {percent:>3}% {human_pos}/{human_len} rows  {per_sec}  ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::no_length().with_style(
            ProgressStyle::with_template("{prefix:>24} {spinner} {human_pos} rows  {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_prefix(format!("copy {table}"));
    bar
}

/// Writes a log line to stderr with the bars suspended.
pub struct SuspendingWriter {
    multi: MultiProgress,
}

impl Write for SuspendingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.multi
            .suspend(|| std::io::stderr().write_all(buf))
            .map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Bars {
    type Writer = SuspendingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        SuspendingWriter {
            multi: self.multi.clone(),
        }
    }
}

//! Several sources read at once (`tail` over many accounts and Regions): each runs in a task of
//! its own and hands its events on as they come; the merge ends when every source has.

use crate::convert::pipeline::{Source, SourceEvent};

/// The events of several sources, in the order they come.
pub struct Merge {
    rx: tokio::sync::mpsc::Receiver<SourceEvent>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Merge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge")
            .field("sources", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Merge {
    /// Starts reading every source in `sources` (on the current Tokio runtime). One event of
    /// each waits at most: a source is read again only when its last event was taken.
    pub fn new<S: Source + 'static>(sources: Vec<S>) -> Merge {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let tasks = sources
            .into_iter()
            .map(|mut s| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(e) = s.next().await {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Merge { rx, tasks }
    }
}

impl Drop for Merge {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Source for Merge {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::pipeline::MemorySource;

    #[tokio::test]
    async fn every_event_of_every_source_comes_once_and_the_merge_ends() {
        let a = MemorySource::new((0..3).map(|n| SourceEvent::Counted { limit: "a", n }));
        let b = MemorySource::new((0..2).map(|n| SourceEvent::Counted { limit: "b", n }));
        let mut m = Merge::new(vec![a, b]);
        let mut got = Vec::new();
        while let Some(e) = m.next().await {
            if let SourceEvent::Counted { limit, n } = e {
                got.push((limit, n));
            }
        }
        got.sort_unstable();
        assert_eq!(got, [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]);
    }
}

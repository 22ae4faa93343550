//! Stop strings over streamed text: a stop string may arrive split across tokens, so text that could
//! be the start of one is held back until it is clear either way.

/// What to do with the text pushed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum StopMatch {
    /// Emit this text and go on.
    Continue(String),
    /// Emit this text (what came before the stop string) and stop.
    Stop(String),
}

#[derive(Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    /// Empty strings are ignored (they would stop before anything was said).
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        StopStrings {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    pub fn push(&mut self, text: &str) -> StopMatch {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let before = self.pending[..at].to_string();
            self.pending.clear();
            return StopMatch::Stop(before);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| held_suffix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let emit_to = self.pending.len() - hold;
        let emit = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        StopMatch::Continue(emit)
    }

    /// Text held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn held_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_split_across_pieces_is_found_and_nothing_of_it_leaks() {
        let mut s = StopStrings::new(["</end>".to_string()]);
        assert_eq!(s.push("hello </"), StopMatch::Continue("hello ".into()));
        assert_eq!(s.push("en"), StopMatch::Continue(String::new()));
        assert_eq!(s.push("d> tail"), StopMatch::Stop(String::new()));
    }

    #[test]
    fn a_false_start_is_released() {
        let mut s = StopStrings::new(["STOP".to_string(), String::new()]);
        assert_eq!(s.push("ST"), StopMatch::Continue(String::new()));
        assert_eq!(s.push("ART"), StopMatch::Continue("START".into()));
        assert_eq!(s.push("x ST"), StopMatch::Continue("x ".into()));
        assert_eq!(s.finish(), "ST");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_unicode_is_safe() {
        let mut s = StopStrings::new(["ü!".to_string(), "b".to_string()]);
        assert_eq!(s.push("aü"), StopMatch::Continue("a".into()));
        assert_eq!(s.push("!b"), StopMatch::Stop(String::new()));
        let mut s = StopStrings::new(["日本".to_string()]);
        assert_eq!(s.push("x日"), StopMatch::Continue("x".into()));
        assert_eq!(s.push("語"), StopMatch::Continue("日語".into()));
    }
}

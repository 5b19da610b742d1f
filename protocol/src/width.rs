//! Widths as exact keys.
//!
//! On the wire a width is an `f32` fraction of the full model (0.25 … 1.0). Floats make poor map
//! keys and poor equality tests, so everything that groups, counts or compares widths uses a
//! [`WidthKey`]: the width in thousandths. 0.25 and 0.250001 are the same width; 0.25 and 0.251
//! are not.

use std::fmt;

/// A width in thousandths of the full model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WidthKey(pub u16);

impl WidthKey {
    /// The key of `width` (clamped into `u16`'s range; a NaN width becomes 0).
    pub fn of(width: f32) -> Self {
        Self((width * 1000.0).round().clamp(0.0, u16::MAX as f32) as u16)
    }

    /// The width this key stands for.
    pub fn width(self) -> f32 {
        f32::from(self.0) / 1000.0
    }

    /// Whether `a` and `b` are the same width.
    pub fn same(a: f32, b: f32) -> bool {
        Self::of(a) == Self::of(b)
    }
}

impl From<f32> for WidthKey {
    fn from(width: f32) -> Self {
        Self::of(width)
    }
}

/// Shortest decimal form: `0.25`, `0.5`, `1`.
impl fmt::Display for WidthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.width())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_that_round_to_the_same_thousandth_are_the_same_width() {
        assert_eq!(WidthKey::of(0.25), WidthKey::of(0.250_000_1));
        assert!(WidthKey::same(0.75, 0.7504));
        assert!(!WidthKey::same(0.25, 0.251));
        assert_eq!(WidthKey::of(0.25).0, 250);
        assert_eq!(WidthKey::of(1.0).width(), 1.0);
    }

    #[test]
    fn hostile_widths_map_to_keys_without_panicking() {
        assert_eq!(WidthKey::of(f32::NAN).0, 0);
        assert_eq!(WidthKey::of(-3.0).0, 0);
        assert_eq!(WidthKey::of(1e9).0, u16::MAX);
    }

    #[test]
    fn a_key_prints_as_its_shortest_width() {
        assert_eq!(WidthKey::of(0.25).to_string(), "0.25");
        assert_eq!(WidthKey::of(1.0).to_string(), "1");
    }
}

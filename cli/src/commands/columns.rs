//! Plain-text tables with aligned columns, for the commands' reports.

use std::fmt::Write as _;

/// `lines` (the header first; every line as long as the header) as text: each column padded to
/// its widest cell (in characters), columns two spaces apart, each line trimmed at the end and
/// ended by a newline. The first `left_aligned` columns are aligned left, the others right.
pub fn align_columns(lines: &[Vec<String>], left_aligned: usize) -> String {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c < left_aligned {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn columns_are_padded_to_the_widest_cell_and_aligned_as_asked() {
        let table = lines(&[&["NAME", "N"], &["a", "100"], &["égal", "7"]]);
        assert_eq!(
            align_columns(&table, 1),
            "NAME    N\na     100\négal    7\n"
        );
        assert_eq!(align_columns(&table, 2), "NAME  N\na     100\négal  7\n");
        assert_eq!(align_columns(&[], 1), "");
    }
}

//! Tables and JSON for the listing commands.

/// Print rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

pub fn json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

/// A listing: JSON of the rows as they are, or a table of `to_row` under `header`.
pub fn listing<T: serde::Serialize>(
    format: super::Format,
    rows: &[T],
    header: &[&str],
    to_row: impl Fn(&T) -> Vec<String>,
) {
    match format {
        super::Format::Json => json(&rows),
        super::Format::Table => table(header, &rows.iter().map(to_row).collect::<Vec<_>>()),
    }
}

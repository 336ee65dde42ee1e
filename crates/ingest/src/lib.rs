//! metaids-ingest: streaming readers for labelled flow datasets.
//!
//! Reads NSL-KDD text files, UNSW-NB15 CSVs and CICFlowMeter CSVs (corrected 91-column schema, and the
//! original CIC-IDS2017/2018 schemas), plain or gzip-compressed, into a [`FlowFrame`]. The format is
//! detected from the first line unless the caller fixes it. A file of JSON objects, one per line
//! (`metaids extract --jsonl`), is read as the CSV whose header is the first object's keys. Memory is bounded per record: a line longer
//! than [`MAX_LINE_BYTES`] is an error, not an allocation. Every error names the file, the line and,
//! for a bad field, the column with what was expected and what was found. This crate does not split,
//! normalise or evaluate; it only reads.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use metaids_core::frame::RowSource;
use metaids_core::record::{ColumnMap, RowBuf};
use metaids_core::schema::{DatasetKind, FileFormat};
use metaids_core::{CoreError, FlowFrame};
use sha2::{Digest, Sha256};

/// Longest accepted line, in bytes. Real rows are under 2 KiB.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Errors of the dataset readers.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The file has no bytes (or only a byte-order mark).
    #[error("{path}: the file is empty")]
    Empty {
        /// The file.
        path: String,
    },
    /// The first line matches no known format.
    #[error("{path}: line 1 matches no known format (nsl-kdd, unsw-nb15, cic-improved, cic-original): {first_line:?}")]
    UnknownFormat {
        /// The file.
        path: String,
        /// The start of its first line.
        first_line: String,
    },
    /// The file's format belongs to another dataset than the one asked for.
    #[error("{path}: this is a {found} file, but dataset {expected} was asked for")]
    WrongDataset {
        /// The file.
        path: String,
        /// The dataset asked for.
        expected: DatasetKind,
        /// The format the file has.
        found: FileFormat,
    },
    /// The header does not fit the format.
    #[error("{path}: line 1 (header): {source}")]
    Header {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: CoreError,
    },
    /// A line of a JSON-lines file is not one JSON object of strings, numbers and nulls.
    #[error("{path}: line {line}: not a JSON object of strings and numbers: {message}")]
    Json {
        /// The file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// The parser's message.
        message: String,
    },
    /// A record is malformed.
    #[error("{path}: line {line}: {source}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        source: CoreError,
    },
    /// The CSV layer failed (bad quoting, a line over [`MAX_LINE_BYTES`], invalid gzip).
    #[error("{path}: line {line}: {message}")]
    Csv {
        /// The file.
        path: String,
        /// 1-based line number where reading stopped.
        line: u64,
        /// The reader's message.
        message: String,
    },
    /// A pattern of the split file matched no file in the data directory.
    #[error("no file in {dir} matches {pattern:?} (nor {pattern:?}.gz)")]
    NoFiles {
        /// The data directory.
        dir: String,
        /// The pattern.
        pattern: String,
    },
    /// Files of different datasets were given together.
    #[error("{path}: a {found} file cannot be read together with {expected} files")]
    MixedDatasets {
        /// The file.
        path: String,
        /// The dataset of the files before it.
        expected: DatasetKind,
        /// Its format.
        found: FileFormat,
    },
}

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRowPolicy {
    /// Stop with an error naming file, line and column.
    #[default]
    Error,
    /// Skip the row and count it.
    Skip,
}

/// Reader options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Force a format instead of detecting it from the first line.
    pub format: Option<FileFormat>,
    /// Dataset every file must belong to (checked after detection).
    pub dataset: Option<DatasetKind>,
    /// Malformed-row policy.
    pub on_bad_row: BadRowPolicy,
}

/// The first skipped rows of a read, for the user to inspect.
#[derive(Debug, Clone, Default)]
pub struct SkipLog {
    /// Rows skipped in all files.
    pub skipped: usize,
    /// The first few skip reasons (file, line, message).
    pub examples: Vec<String>,
}

/// Opens a file for reading, decompressing gzip when its name ends in `.gz` (any case).
pub fn open(path: &Path) -> Result<Box<dyn Read>, IngestError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    Ok(decompressing(path, file))
}

/// `inner` (the bytes of the file `path`), decompressed when the name ends in `.gz` (any case).
pub fn decompressing<R: Read + 'static>(path: &Path, inner: R) -> Box<dyn Read> {
    let is_gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if is_gz {
        Box::new(MultiGzDecoder::new(inner))
    } else {
        Box::new(inner)
    }
}

fn io_err(path: &Path, source: io::Error) -> IngestError {
    IngestError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Passes bytes through, failing once a line grows past a limit: bounds the CSV reader's buffers on
/// corrupt input with no newlines.
struct LineLimit<R> {
    inner: R,
    current: usize,
    limit: usize,
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(last) => self.current = n - last - 1,
            None => self.current += n,
        }
        if self.current > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line is longer than {} bytes", self.limit),
            ));
        }
        Ok(n)
    }
}

/// Detects the format of a file from its first line.
pub fn detect_format(path: &Path) -> Result<FileFormat, IngestError> {
    let mut reader = BufReader::with_capacity(
        64 * 1024,
        LineLimit {
            inner: open(path)?,
            current: 0,
            limit: MAX_LINE_BYTES,
        },
    );
    detect_from(&mut reader, path)
}

fn detect_from<R: BufRead>(reader: &mut R, path: &Path) -> Result<FileFormat, IngestError> {
    let mut first = Vec::new();
    // Detection consumes the first line; the reader opens the file again for parsing.
    reader
        .read_until(b'\n', &mut first)
        .map_err(|e| io_err(path, e))?;
    let stripped = metaids_core::schema::strip_bom(&first);
    if stripped.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::Empty {
            path: path.display().to_string(),
        });
    }
    let header = if stripped.trim_ascii_start().starts_with(b"{") {
        // JSON lines: the first object's keys are the header.
        json_object(stripped)
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default()
            .into_bytes()
    } else {
        stripped.to_vec()
    };
    FileFormat::detect(&header).ok_or_else(|| {
        let text = String::from_utf8_lossy(&stripped[..stripped.len().min(120)]);
        IngestError::UnknownFormat {
            path: path.display().to_string(),
            first_line: text.trim_end().to_string(),
        }
    })
}

/// Reads one file into `frame` (whose layout must be the file's dataset kind).
///
/// Returns the number of rows read and skipped.
pub fn read_into(
    frame: &mut FlowFrame,
    path: &Path,
    opts: &ReadOptions,
    skips: &mut SkipLog,
) -> Result<(usize, usize), IngestError> {
    // One chunk: the whole file stays in `frame`.
    stream_file(frame, path, opts, skips, usize::MAX, &mut |_| {
        Ok::<(), IngestError>(())
    })
}

/// Reads a stream of `format` named `name` (for messages) into `frame`: the parser behind
/// [`read_into`], usable on any bytes (and fuzzed as such).
pub fn read_from<R: Read>(
    frame: &mut FlowFrame,
    reader: R,
    name: &str,
    format: FileFormat,
    on_bad_row: BadRowPolicy,
    skips: &mut SkipLog,
) -> Result<(usize, usize), IngestError> {
    read_chunked(
        frame,
        reader,
        name,
        format,
        on_bad_row,
        skips,
        usize::MAX,
        &mut |_| Ok::<(), IngestError>(()),
    )
}

/// Streams one file through `frame` in chunks: every `chunk_rows` rows (and once at the end)
/// `on_chunk` gets the frame, which is then emptied ([`FlowFrame::clear_rows`]), so memory is bounded
/// by the chunk, not the file. Rows, lines and bad-row handling are those of [`read_into`].
pub fn stream_file<E: From<IngestError>>(
    frame: &mut FlowFrame,
    path: &Path,
    opts: &ReadOptions,
    skips: &mut SkipLog,
    chunk_rows: usize,
    on_chunk: &mut dyn FnMut(&mut FlowFrame) -> Result<(), E>,
) -> Result<(usize, usize), E> {
    let format = match opts.format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    read_chunked(
        frame,
        open(path)?,
        &path.display().to_string(),
        format,
        opts.on_bad_row,
        skips,
        chunk_rows.max(1),
        on_chunk,
    )
}

#[allow(clippy::too_many_arguments)]
fn read_chunked<R: Read, E: From<IngestError>>(
    frame: &mut FlowFrame,
    reader: R,
    name: &str,
    format: FileFormat,
    on_bad_row: BadRowPolicy,
    skips: &mut SkipLog,
    chunk_rows: usize,
    on_chunk: &mut dyn FnMut(&mut FlowFrame) -> Result<(), E>,
) -> Result<(usize, usize), E> {
    let shown = name.to_string();
    if format.kind() != frame.layout.kind {
        return Err(IngestError::MixedDatasets {
            path: shown,
            expected: frame.layout.kind,
            found: format,
        }
        .into());
    }
    let mut input = BufReader::with_capacity(
        256 * 1024,
        LineLimit {
            inner: reader,
            current: 0,
            limit: MAX_LINE_BYTES,
        },
    );
    let json = {
        let head = input.fill_buf().map_err(|e| IngestError::Csv {
            path: shown.clone(),
            line: 1,
            message: e.to_string(),
        })?;
        metaids_core::schema::strip_bom(head)
            .trim_ascii_start()
            .starts_with(b"{")
    };
    let mut records = if json {
        Records::Json(JsonLines::new(input, shown.clone()))
    } else {
        Records::Csv(
            csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .buffer_capacity(256 * 1024)
                .from_reader(input),
            shown.clone(),
        )
    };
    let mut record = csv::ByteRecord::new();
    let map = if format.has_header() {
        let got = records.header(&mut record)?;
        if !got
            || record
                .iter()
                .all(|f| metaids_core::schema::strip_bom(f).trim_ascii().is_empty())
        {
            return Err(IngestError::Empty { path: shown }.into());
        }
        let fields: Vec<&[u8]> = record.iter().collect();
        ColumnMap::from_header(format, &fields).map_err(|source| IngestError::Header {
            path: shown.clone(),
            source,
        })?
    } else {
        ColumnMap::nsl_kdd()
    };
    let file = frame.add_file(&shown, &map);
    let mut row = RowBuf::default();
    let (mut rows, mut skipped) = (0usize, 0usize);
    let mut line = if format.has_header() && !json {
        1u64
    } else {
        0
    };
    loop {
        let bad = match records.next(&mut record, line) {
            Ok(None) => break,
            Err(RecordError::Fatal(e)) => return Err(e.into()),
            Err(RecordError::Bad(e, at)) => {
                line = at;
                e
            }
            Ok(Some(at)) => {
                line = at;
                // A blank line (a trailing empty line, CRLF debris) carries no row.
                if record.len() == 1 && record[0].trim_ascii().is_empty() {
                    continue;
                }
                match map.parse_into(record.iter(), &mut row) {
                    Ok(()) => {
                        frame.push(&row, RowSource { file, line });
                        rows += 1;
                        if frame.len() >= chunk_rows {
                            on_chunk(frame)?;
                            frame.clear_rows();
                        }
                        continue;
                    }
                    Err(source) => IngestError::Row {
                        path: shown.clone(),
                        line,
                        source,
                    },
                }
            }
        };
        match on_bad_row {
            BadRowPolicy::Error => return Err(bad.into()),
            BadRowPolicy::Skip => {
                skipped += 1;
                skips.skipped += 1;
                if skips.examples.len() < 5 {
                    skips.examples.push(bad.to_string());
                }
            }
        }
    }
    if rows == 0 && skipped == 0 && !format.has_header() {
        return Err(IngestError::Empty { path: shown }.into());
    }
    if let Some(f) = frame.files.get_mut(file as usize) {
        f.skipped = skipped;
    }
    if chunk_rows != usize::MAX && !frame.is_empty() {
        on_chunk(frame)?;
        frame.clear_rows();
    }
    Ok((rows, skipped))
}

/// Why the next record could not be had: the stream is unusable, or one line is bad (a row
/// error that the bad-row policy may skip), at that line.
enum RecordError {
    Fatal(IngestError),
    Bad(IngestError, u64),
}

/// The records of a file as CSV fields: CSV itself, or JSON lines laid out as the CSV whose
/// header is the first object's keys.
enum Records<R: Read> {
    Csv(csv::Reader<BufReader<LineLimit<R>>>, String),
    Json(JsonLines<BufReader<LineLimit<R>>>),
}

impl<R: Read> Records<R> {
    /// Reads the header into `record`; `false` at end of input.
    fn header(&mut self, record: &mut csv::ByteRecord) -> Result<bool, IngestError> {
        match self {
            Records::Csv(csv, path) => csv
                .read_byte_record(record)
                .map_err(|e| csv_error(path, e, 1)),
            Records::Json(json) => json.header(record),
        }
    }

    /// Reads the next record; its 1-based line, or `None` at the end. `line` is the last one.
    fn next(
        &mut self,
        record: &mut csv::ByteRecord,
        line: u64,
    ) -> Result<Option<u64>, RecordError> {
        match self {
            Records::Csv(csv, path) => match csv.read_byte_record(record) {
                Ok(false) => Ok(None),
                Ok(true) => Ok(Some(record.position().map_or(line + 1, |p| p.line()))),
                Err(e) => Err(RecordError::Fatal(csv_error(path, e, line + 1))),
            },
            Records::Json(json) => json.next(record),
        }
    }
}

fn csv_error(path: &str, e: csv::Error, line: u64) -> IngestError {
    IngestError::Csv {
        path: path.to_string(),
        line: e.position().map_or(line, |p| p.line()),
        message: match e.kind() {
            csv::ErrorKind::Io(io) => io.to_string(),
            _ => e.to_string(),
        },
    }
}

/// One line as a JSON object, or why not.
fn json_object(line: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

/// JSON lines (what `metaids extract --jsonl` writes): every line one object; the first
/// object's keys are the header, and each line gives the value of each key (a missing key is an
/// empty field; keys not in the header are ignored). Strings and numbers become fields as
/// their text; `null` an empty field.
struct JsonLines<B> {
    input: B,
    path: String,
    keys: Vec<String>,
    /// The first object, read for its keys and handed on as the first row.
    first: Option<serde_json::Map<String, serde_json::Value>>,
    buf: Vec<u8>,
    line: u64,
}

impl<B: BufRead> JsonLines<B> {
    fn new(input: B, path: String) -> Self {
        JsonLines {
            input,
            path,
            keys: Vec::new(),
            first: None,
            buf: Vec::new(),
            line: 0,
        }
    }

    /// The next non-blank line, or `None` at the end.
    fn read_line(&mut self) -> Result<Option<()>, IngestError> {
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| IngestError::Csv {
                    path: self.path.clone(),
                    line: self.line + 1,
                    message: e.to_string(),
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if !self.buf.trim_ascii().is_empty() {
                return Ok(Some(()));
            }
        }
    }

    fn bad(&self, message: String) -> IngestError {
        IngestError::Json {
            path: self.path.clone(),
            line: self.line,
            message,
        }
    }

    fn header(&mut self, record: &mut csv::ByteRecord) -> Result<bool, IngestError> {
        if self.read_line()?.is_none() {
            return Ok(false);
        }
        let text = metaids_core::schema::strip_bom(&self.buf);
        let object = json_object(text).map_err(|m| self.bad(m))?;
        self.keys = object.keys().cloned().collect();
        record.clear();
        for key in &self.keys {
            record.push_field(key.as_bytes());
        }
        self.first = Some(object);
        Ok(true)
    }

    fn next(&mut self, record: &mut csv::ByteRecord) -> Result<Option<u64>, RecordError> {
        let object = match self.first.take() {
            Some(first) => first,
            None => {
                if self.read_line().map_err(RecordError::Fatal)?.is_none() {
                    return Ok(None);
                }
                json_object(&self.buf).map_err(|m| RecordError::Bad(self.bad(m), self.line))?
            }
        };
        record.clear();
        let mut text = String::new();
        for key in &self.keys {
            match object.get(key) {
                None | Some(serde_json::Value::Null) => record.push_field(b""),
                Some(serde_json::Value::String(s)) => record.push_field(s.as_bytes()),
                Some(serde_json::Value::Number(n)) => {
                    text.clear();
                    use std::fmt::Write as _;
                    // Writing to a String cannot fail.
                    let _ = write!(text, "{n}");
                    record.push_field(text.as_bytes());
                }
                Some(other) => {
                    let kind = match other {
                        serde_json::Value::Bool(_) => "a boolean",
                        serde_json::Value::Array(_) => "an array",
                        _ => "an object",
                    };
                    let message = format!("{key:?} is {kind}");
                    return Err(RecordError::Bad(self.bad(message), self.line));
                }
            }
        }
        Ok(Some(self.line))
    }
}

/// Reads files of one dataset into a new frame. The dataset is `opts.dataset`, else that of the first
/// file's format.
pub fn read_files(
    paths: &[PathBuf],
    opts: &ReadOptions,
) -> Result<(FlowFrame, SkipLog), IngestError> {
    let mut skips = SkipLog::default();
    let Some(first) = paths.first() else {
        return Err(IngestError::NoFiles {
            dir: ".".into(),
            pattern: "<none given>".into(),
        });
    };
    let kind = match (opts.dataset, opts.format) {
        (Some(k), _) => k,
        (None, Some(f)) => f.kind(),
        (None, None) => detect_format(first)?.kind(),
    };
    let mut frame = FlowFrame::new(kind.layout());
    for path in paths {
        let format = match opts.format {
            Some(f) => f,
            None => detect_format(path)?,
        };
        if format.kind() != kind {
            return Err(IngestError::WrongDataset {
                path: path.display().to_string(),
                expected: kind,
                found: format,
            });
        }
        let file_opts = ReadOptions {
            format: Some(format),
            ..opts.clone()
        };
        read_into(&mut frame, path, &file_opts, &mut skips)?;
    }
    Ok((frame, skips))
}

/// Resolves split-file patterns (`*` wildcards; a `.gz` copy accepted) against a data directory, in
/// pattern order, each pattern's matches sorted by name.
pub fn resolve_files(dir: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, IngestError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let mut matched: Vec<&String> = names.iter().filter(|n| glob_match(pattern, n)).collect();
        if matched.is_empty() {
            let gz = format!("{pattern}.gz");
            matched = names.iter().filter(|n| glob_match(&gz, n)).collect();
        }
        if matched.is_empty() {
            return Err(IngestError::NoFiles {
                dir: dir.display().to_string(),
                pattern: pattern.clone(),
            });
        }
        for m in matched {
            let p = dir.join(m);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Matches `name` against a pattern whose only metacharacter is `*` (any run of characters).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Sha256 of a file's bytes (as stored, compressed or not), hex.
pub fn file_sha256(path: &Path) -> Result<String, IngestError> {
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(metaids_core::schema::hex(&h.finalize()))
}

/// A file written under a temporary name in the same directory and renamed into place by
/// [`AtomicFile::commit`]: readers never see half of it, and a crash or an error leaves the old
/// file (if any) untouched. Dropped without commit, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    file: metaids_durable::DurableFile,
}

impl AtomicFile {
    /// Creates the temporary file for `path` (`metaids_durable`: a device, FIFO or socket is
    /// written through, a symlink followed, a directory refused).
    pub fn create(path: &Path) -> Result<Self, IngestError> {
        let file = metaids_durable::DurableFile::create(path, metaids_durable::Staging::Hidden)
            .map_err(|e| io_err(path, e))?;
        Ok(AtomicFile { file })
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<(), IngestError> {
        let path = self.file.path().to_path_buf();
        self.file.commit().map_err(|e| io_err(&path, e))
    }
}

impl io::Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `bytes` to `path` atomically (see [`AtomicFile`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    use std::io::Write;
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.json");
        std::fs::write(&path, b"old").expect("old");
        {
            let mut f = AtomicFile::create(&path).expect("create");
            f.write_all(b"half").expect("write");
            // Dropped without commit: the old content stays and no temporary file is left.
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"new").expect("write");
        f.commit().expect("commit");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.csv", "a.csv"));
        assert!(glob_match("KDDTrain+.txt", "KDDTrain+.txt"));
        assert!(!glob_match("KDDTrain+.txt", "KDDTrain+_20Percent.txt"));
        assert!(glob_match(
            "UNSW_NB15_*-set.csv",
            "UNSW_NB15_testing-set.csv"
        ));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }

    #[test]
    fn line_limit_stops_runaway_lines() {
        let data = vec![b'x'; 5000];
        let mut r = LineLimit {
            inner: &data[..],
            current: 0,
            limit: 1000,
        };
        let mut sink = Vec::new();
        let err = r.read_to_end(&mut sink).expect_err("limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let ok = b"abc\ndef\n".repeat(1000);
        let mut r = LineLimit {
            inner: &ok[..],
            current: 0,
            limit: 10,
        };
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).expect("short lines pass");
        assert_eq!(sink.len(), ok.len());
    }
}

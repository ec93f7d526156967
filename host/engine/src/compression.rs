//! How a table's Parquet data files are compressed, from its Iceberg table properties
//! `write.parquet.compression-codec` and `write.parquet.compression-level` (Java Iceberg's
//! names, so `ALTER TABLE ... SET TBLPROPERTIES` from Spark or PyIceberg's `set_properties`
//! changes what the next commit and the next compaction write).
//!
//! Unset, files are zstd level 1: on ingest-shaped data it costs about half of level 3's CPU
//! for files within a few percent of its size (BENCHMARKS.md, issue 12), and it is what an
//! ingest path is measured against. A table that wants smaller files at rest sets the level.
//! A value that does not parse, or a level out of the codec's range, is ignored with a
//! warning — a typo in a property must not fail every commit of the table.

use std::collections::HashMap;

use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};

/// Table property: the codec (`zstd`, `snappy`, `gzip`, `lz4`, `brotli`, `uncompressed`).
pub const CODEC: &str = "write.parquet.compression-codec";
/// Table property: the codec's level (zstd 1–22, gzip 0–9, brotli 0–11).
pub const LEVEL: &str = "write.parquet.compression-level";
/// The zstd level when the table does not set one.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// The compression of a table's data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetCompression(Compression);

impl Default for ParquetCompression {
    fn default() -> Self {
        ParquetCompression(zstd(DEFAULT_ZSTD_LEVEL))
    }
}

impl ParquetCompression {
    /// The compression `properties` (a table's) ask for; see the module docs for defaults.
    pub fn of(properties: &HashMap<String, String>) -> ParquetCompression {
        let codec = properties.get(CODEC).map(|c| c.trim().to_ascii_lowercase());
        let level = properties.get(LEVEL).and_then(|raw| {
            let parsed = raw.trim().parse::<i32>().ok();
            if parsed.is_none() {
                warn_ignored(LEVEL, raw);
            }
            parsed
        });
        let with_level = |level: Option<i32>| -> Option<Compression> {
            match codec.as_deref().unwrap_or("zstd") {
                "zstd" => Some(Compression::ZSTD(match level {
                    Some(l) => ZstdLevel::try_new(l).ok()?,
                    None => ZstdLevel::try_new(DEFAULT_ZSTD_LEVEL).ok()?,
                })),
                "gzip" => Some(Compression::GZIP(match level {
                    Some(l) => GzipLevel::try_new(u32::try_from(l).ok()?).ok()?,
                    None => GzipLevel::default(),
                })),
                "brotli" => Some(Compression::BROTLI(match level {
                    Some(l) => BrotliLevel::try_new(u32::try_from(l).ok()?).ok()?,
                    None => BrotliLevel::default(),
                })),
                "snappy" => Some(Compression::SNAPPY),
                // The raw block format: what Parquet's LZ4 means today (the Hadoop-framed
                // `LZ4` codec is deprecated by the format).
                "lz4" => Some(Compression::LZ4_RAW),
                "uncompressed" | "none" => Some(Compression::UNCOMPRESSED),
                _ => None,
            }
        };
        if let Some(compression) = with_level(level) {
            return ParquetCompression(compression);
        }
        if level.is_some() {
            if let Some(compression) = with_level(None) {
                warn_ignored(LEVEL, &properties[LEVEL]);
                return ParquetCompression(compression);
            }
        }
        if let Some(raw) = properties.get(CODEC) {
            warn_ignored(CODEC, raw);
        }
        ParquetCompression::default()
    }

    /// The Parquet writer's setting.
    pub fn codec(self) -> Compression {
        self.0
    }
}

fn zstd(level: i32) -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
}

fn warn_ignored(key: &str, value: &str) {
    tracing::warn!(property = key, value = %value, "ignoring a table property that does not parse");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&str, &str)]) -> Compression {
        let props = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ParquetCompression::of(&props).codec()
    }

    #[test]
    fn unset_is_zstd_level_1() {
        assert_eq!(of(&[]), Compression::ZSTD(ZstdLevel::try_new(1).unwrap()));
        assert_eq!(
            of(&[(CODEC, "zstd")]),
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        );
    }

    #[test]
    fn codec_and_level_are_honoured() {
        assert_eq!(
            of(&[(CODEC, "ZSTD"), (LEVEL, " 9 ")]),
            Compression::ZSTD(ZstdLevel::try_new(9).unwrap())
        );
        assert_eq!(
            of(&[(LEVEL, "3")]),
            Compression::ZSTD(ZstdLevel::try_new(3).unwrap())
        );
        assert_eq!(
            of(&[(CODEC, "gzip"), (LEVEL, "6")]),
            Compression::GZIP(GzipLevel::try_new(6).unwrap())
        );
        assert_eq!(
            of(&[(CODEC, "brotli")]),
            Compression::BROTLI(BrotliLevel::default())
        );
        assert_eq!(of(&[(CODEC, "snappy")]), Compression::SNAPPY);
        assert_eq!(of(&[(CODEC, "lz4")]), Compression::LZ4_RAW);
        assert_eq!(of(&[(CODEC, "uncompressed")]), Compression::UNCOMPRESSED);
    }

    #[test]
    fn bad_values_fall_back_instead_of_failing() {
        let zstd1 = Compression::ZSTD(ZstdLevel::try_new(1).unwrap());
        assert_eq!(of(&[(CODEC, "lzo")]), zstd1);
        assert_eq!(of(&[(LEVEL, "max")]), zstd1);
        assert_eq!(of(&[(LEVEL, "99")]), zstd1);
        // A level the codec does not take keeps the codec.
        assert_eq!(
            of(&[(CODEC, "gzip"), (LEVEL, "-1")]),
            Compression::GZIP(GzipLevel::default())
        );
        assert_eq!(of(&[(CODEC, "snappy"), (LEVEL, "5")]), Compression::SNAPPY);
    }
}

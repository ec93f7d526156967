//! A rest-ingest plugin that misbehaves on purpose. The body selects the fault:
//! `trap`, `loop`, `oom`, `wrong-table`, `ragged`, `wrong-type`; anything else decodes as one
//! insert row with every column null except the first, set to 1 (for an int64 first column).

use moonlink_sdk::rest::{IngestRequest, RequestInfo, RequestMode, RestDecoder};
use moonlink_sdk::{BatchBuilder, Column, ColumnValues, DataError, Operation, Value};

pub struct Faulty;

impl RestDecoder for Faulty {
    fn decode(info: RequestInfo, body: Vec<u8>) -> Result<IngestRequest, DataError> {
        let mut builder = BatchBuilder::new(&info.table, &info.schema);
        builder.start_row(Operation::Insert);
        let _ = builder.set(0, Value::Int(1));
        builder.finish_row()?;
        let mut batch = builder.finish();
        match body.as_slice() {
            b"trap" => panic!("faulty plugin: asked to trap"),
            b"loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            b"wrong-table" => batch.table = "some.other_table".into(),
            b"ragged" => batch.columns[0].values = ColumnValues::Int64(vec![1, 2, 3]),
            b"wrong-type" => {
                batch.columns = vec![Column {
                    name: batch.columns[0].name.clone(),
                    values: ColumnValues::Utf8(vec!["x".into()]),
                    validity: None,
                    unchanged: None,
                }]
            }
            _ => {}
        }
        Ok(IngestRequest {
            batch,
            request_mode: RequestMode::Sync,
        })
    }
}

moonlink_sdk::export_rest_decoder!(Faulty);

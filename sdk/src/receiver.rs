//! The HTTP-receiver plugin kind (WIT 0.3.0): the plugin answers HTTP requests itself and
//! turns each into change batches for one or more tables (an OpenTelemetry OTLP receiver, a
//! webhook). Implement [`Receiver`] and call [`export_receiver!`](crate::export_receiver).
//!
//! The host keeps a pool of instances and calls `open` on each new one before its first
//! request, so a receiver may keep its settings between calls, never data: the next request
//! may go to another instance. The host writes the batches durably before it sends the
//! response; when it cannot (a batch refused, the host backlogged, the body too large) it
//! answers with the plugin's [`Receiver::failure`] instead and nothing of the request is
//! written.

use std::any::Any;
use std::cell::RefCell;

pub use crate::bindings::receiver::exports::moonlink::plugin::receiver::{
    HttpRequest, HttpResponse, Reception,
};
pub use crate::TableDef;
use crate::{ChangeBatch, Config};

/// A receiver of HTTP requests.
///
/// ```
/// use moonlink_sdk::receiver::{HttpRequest, HttpResponse, Reception, Receiver};
/// use moonlink_sdk::{BatchBuilder, Config, DataType, Field, TableDef, TableSchema};
///
/// /// One row per `POST /lines` body line, in table `web.lines`.
/// pub struct Lines {
///     schema: TableSchema,
/// }
///
/// impl Receiver for Lines {
///     fn open(_config: Config) -> Result<(Self, Vec<TableDef>), String> {
///         let schema = TableSchema::new(vec![Field::required("line", DataType::Utf8)]);
///         let tables = vec![TableDef::new("web.lines", schema.clone())];
///         Ok((Lines { schema }, tables))
///     }
///
///     fn receive(&mut self, request: HttpRequest) -> Reception {
///         if request.path != "/lines" {
///             return Reception::respond(HttpResponse::text(404, "no such path"));
///         }
///         let mut batch = BatchBuilder::new("web.lines", &self.schema);
///         for line in String::from_utf8_lossy(&request.body).lines() {
///             let mut row = batch.row();
///             if let Err(e) = row.set("line", line) {
///                 return Reception::respond(HttpResponse::text(400, &e.describe()));
///             }
///             let _ = row.finish(moonlink_sdk::Operation::Insert);
///         }
///         Reception::write(vec![batch.finish()], HttpResponse::text(200, "ok"))
///     }
/// }
///
/// moonlink_sdk::export_receiver!(Lines);
///
/// fn main() {
///     let (mut receiver, tables) = Lines::open(Config::default()).unwrap();
///     assert_eq!(tables[0].name, "web.lines");
///     let request = HttpRequest::post("/lines", "text/plain", b"a\nb\n".to_vec());
///     let reception = receiver.receive(request);
///     assert_eq!(reception.batches[0].num_rows(), 2);
///     assert_eq!(reception.response.status, 200);
/// }
/// ```
pub trait Receiver: Sized + 'static {
    /// Reads the settings and returns the receiver with the tables it writes (the host
    /// creates those missing, with their partition specs).
    fn open(config: Config) -> Result<(Self, Vec<TableDef>), String>;

    /// Handles one request: the batches to write and the answer to send once they are
    /// durable. A refused request has no batches and an error status.
    fn receive(&mut self, request: HttpRequest) -> Reception;

    /// The answer for a request the host could not accept (`status` 413, 429, 500 or 503,
    /// `message` saying why), in the form the client expects. By default plain text.
    fn failure(
        &self,
        request_headers: &[(String, String)],
        status: u16,
        message: &str,
    ) -> HttpResponse {
        let _ = request_headers;
        HttpResponse::text(status, message)
    }
}

impl HttpRequest {
    /// The first value of header `name` (give it in lower case, as the host sends names).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// A `POST` of `body` with `content-type` (for native tests).
    pub fn post(path: &str, content_type: &str, body: Vec<u8>) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }
}

/// The first value of header `name` (lower case) among `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl HttpResponse {
    /// A response with `body` of `content_type`.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, message: &str) -> HttpResponse {
        HttpResponse::new(
            status,
            "text/plain; charset=utf-8",
            message.as_bytes().to_vec(),
        )
    }
}

impl Reception {
    /// Write `batches`, then answer `response`.
    pub fn write(batches: Vec<ChangeBatch>, response: HttpResponse) -> Reception {
        Reception { batches, response }
    }

    /// Answer `response` and write nothing.
    pub fn respond(response: HttpResponse) -> Reception {
        Reception {
            batches: Vec::new(),
            response,
        }
    }
}

thread_local! {
    // The instance's receiver, set by `open`. A component instance is single-threaded.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __open<R: Receiver>(config: String) -> Result<Vec<TableDef>, String> {
    let config = Config::parse(&config)?;
    let (receiver, tables) = R::open(config)?;
    INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(receiver)));
    Ok(tables)
}

#[doc(hidden)]
pub fn __receive<R: Receiver>(request: HttpRequest) -> Reception {
    INSTANCE.with(|i| {
        let mut slot = i.borrow_mut();
        match slot.as_mut().and_then(|r| r.downcast_mut::<R>()) {
            Some(receiver) => receiver.receive(request),
            None => Reception::respond(HttpResponse::text(
                500,
                "the host called the receiver before open",
            )),
        }
    })
}

#[doc(hidden)]
pub fn __failure<R: Receiver>(
    headers: Vec<(String, String)>,
    status: u16,
    message: String,
) -> HttpResponse {
    INSTANCE.with(|i| {
        let slot = i.borrow();
        match slot.as_ref().and_then(|r| r.downcast_ref::<R>()) {
            Some(receiver) => receiver.failure(&headers, status, &message),
            None => HttpResponse::text(status, &message),
        }
    })
}

/// Exports a type implementing [`Receiver`] as the plugin's `receiver`.
#[macro_export]
macro_rules! export_receiver {
    ($receiver:ident) => {
        // Exports exist only in the component; natively the plugin is a plain library, so
        // its logic can be unit-tested with `cargo test`.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct MoonlinkReceiverExport;
            impl $crate::bindings::receiver::exports::moonlink::plugin::receiver::Guest
                for MoonlinkReceiverExport
            {
                fn open(config: String) -> Result<Vec<$crate::receiver::TableDef>, String> {
                    $crate::receiver::__open::<$receiver>(config)
                }
                fn receive(request: $crate::receiver::HttpRequest) -> $crate::receiver::Reception {
                    $crate::receiver::__receive::<$receiver>(request)
                }
                fn failure(
                    request_headers: Vec<(String, String)>,
                    status: u16,
                    message: String,
                ) -> $crate::receiver::HttpResponse {
                    $crate::receiver::__failure::<$receiver>(request_headers, status, message)
                }
            }
            $crate::bindings::receiver::__export_receiver_world!(
                MoonlinkReceiverExport with_types_in $crate::bindings::receiver
            );
        };
    };
}

//! The body of the responses the general (hyper) path sends, and the proxy's own answers on it.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

/// The body of every response the proxy sends: the upstream's, streamed, or one of its own.
/// An enum rather than a boxed body, so a forwarded response costs no allocation.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Upstream(Incoming),
    Local(Full<Bytes>),
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Upstream(body) => std::pin::Pin::new(body).poll_frame(cx),
            Self::Local(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(body) => body.is_end_stream(),
            Self::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Upstream(body) => body.size_hint(),
            Self::Local(body) => body.size_hint(),
        }
    }
}

/// A response made by the proxy itself.
pub(crate) fn local_response(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(text.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

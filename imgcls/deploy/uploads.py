"""Uploaded images off an HTTP request, within limits, before FastAPI reads the body.

`checked_form` runs before a route's body is parsed (imgcls.deploy.serve's GuardedRoute): a request
that is chunked, too large or not multipart is refused from its headers alone, and the form is then
parsed with the server's file and field limits, once; FastAPI's own parsing reuses it.
"""

from __future__ import annotations

from fastapi import Request, UploadFile
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect


class BadInput(Exception):
    """A request the server refuses: answered as {"error": {"status", "code", "message"}}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


UNNAMED = "(no filename)"  # the filename given to a part sent without one (FastAPI takes a part named "" for no file)


class _UploadParser(MultiPartParser):
    """Starlette's multipart parser, except that every part of the upload field is a file, filename or not.

    RFC 7578 only recommends ("SHOULD") a filename on a file's part; without one Starlette would decode the
    part's bytes as text (lossily) and the upload would seem missing.
    """

    def __init__(self, *args, upload_field: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.upload_field = upload_field

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        part = self._current_part
        _, options = parse_options_header(part.content_disposition)
        if b"filename" not in options and options.get(b"name") == self.upload_field.encode():
            part.content_disposition += f'; filename="{UNNAMED}"'.encode()
        super().on_headers_finished()


class UploadRequest(Request):
    """A request whose multipart form treats every part of `upload_field` as a file (FastAPI's pattern of a
    custom Request class in a custom route)."""

    def __init__(self, scope, receive, *, upload_field: str):
        super().__init__(scope, receive)
        self.upload_field = upload_field

    async def form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                   max_part_size: int = 1024 * 1024) -> FormData:
        if self._form is None:  # Starlette's own cache of the parsed form (closed with the request)
            parser = _UploadParser(self.headers, self.stream(), max_files=max_files, max_fields=max_fields,
                                   max_part_size=max_part_size, upload_field=self.upload_field)
            self._form = await parser.parse()
        return self._form


async def checked_form(request: Request, field: str, *, single: bool, max_request_bytes: int,
                       max_files: int) -> UploadRequest:
    """`request` as an UploadRequest whose form is parsed and holds one (`single`) or several files in `field`."""
    length = request.headers.get("content-length", "")
    if not length.isdigit():  # a chunked body could not be limited before it is stored: refused
        raise BadInput(411, "length_required", "send a Content-Length header (chunked uploads are not accepted)")
    if int(length) > max_request_bytes:
        raise BadInput(413, "too_large", f"request of {int(length):,} bytes; at most {max_request_bytes:,}")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise BadInput(415, "not_multipart", f"send the image(s) as multipart/form-data in the field '{field}'")
    request = UploadRequest(request.scope, request.receive, upload_field=field)
    try:
        form = await request.form(max_files=max_files, max_fields=100)
    except (MultiPartException, StarletteHTTPException, KeyError, ValueError) as e:  # KeyError: no Content-Type boundary
        msg = str(getattr(e, "detail", None) or getattr(e, "message", None) or e)
        if "Too many files" in msg:
            raise BadInput(413, "too_many_files", msg) from None
        raise BadInput(400, "bad_multipart", f"the multipart body could not be read: {msg}") from None
    except ClientDisconnect:
        raise BadInput(400, "bad_multipart", "the client closed the connection before the body was complete") from None
    files = [v for k, v in form.multi_items() if k == field and hasattr(v, "read")]
    problem = None
    if not files:
        sent = sorted({k for k, _ in form.multi_items()})
        problem = BadInput(422, "no_files", f"no file in the field '{field}'"
                                            + (f" (the request has: {', '.join(sent)})" if sent else ""))
    elif single and len(files) > 1:
        problem = BadInput(422, "one_file", f"send one file in the field '{field}', not {len(files)}")
    if problem is not None:
        await form.close()
        raise problem
    return request


async def read_uploads(files: list[UploadFile], *, max_file_bytes: int, max_request_bytes: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each upload, each file and all together within the limits; unnamed files are 'file N'."""
    out, total = [], 0
    for i, up in enumerate(files):
        name = up.filename if up.filename and up.filename != UNNAMED else f"file {i + 1}"
        data = await up.read(max_file_bytes + 1)
        if len(data) > max_file_bytes:
            raise BadInput(413, "file_too_large", f"{name}: more than {max_file_bytes:,} bytes")
        total += len(data)
        if total > max_request_bytes:
            raise BadInput(413, "too_large", f"the files add up to more than {max_request_bytes:,} bytes")
        out.append((name, data))
    return out

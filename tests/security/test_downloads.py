"""Finding 15: the uploader chooses the Content-Type, so no download may render on the API's
origin: a page uploaded as text/html comes back as an attachment, unsniffed, sandboxed."""

from __future__ import annotations

import base64

from tests.conftest import Service
from tests.test_files import has_status, wait_file

CHUNK = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
PAGE = b"<html><script>fetch('/api/v1/tasks').then(r => r.text()).then(alert)</script></html>"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def uploaded(service: Service, content: bytes, metadata: str) -> str:
    answer = await service.http.post(
        "/uploads/",
        content=content,
        headers={**CHUNK, "Upload-Length": str(len(content)), "Upload-Metadata": metadata},
    )
    assert answer.status_code == 201, answer.text
    file_id = answer.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    await wait_file(service, file_id, has_status("ready"))
    return file_id


async def test_an_uploaded_html_page_is_never_served_inline(service: Service) -> None:
    file_id = await uploaded(service, PAGE, f"filetype {b64('text/html')}")  # and no filename

    page = await service.http.get(f"/files/{file_id}/download")

    assert page.status_code == 200 and page.content == PAGE
    assert page.headers["content-disposition"].startswith("attachment")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_a_picture_is_still_shown_inline_but_sandboxed(service: Service) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    file_id = await uploaded(service, png, f"filetype {b64('image/png')},filename {b64('a.png')}")

    picture = await service.http.get(f"/files/{file_id}/download")

    assert picture.headers["content-type"] == "image/png"
    assert picture.headers["content-disposition"].startswith("inline; filename*=UTF-8''a.png")
    assert picture.headers["x-content-type-options"] == "nosniff"

"""Reading the keyword worksheet from Google Sheets (gspread + a service account).

Every failure of Google's side (credentials file, token, spreadsheet, worksheet, network) becomes
one `SheetError` with a stable `reason` code and a message an operator can act on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

# Read-only scopes: the sync never writes to the sheet.
SCOPES = (
    "https://www.googleapis.com/auth/spreadsheets.readonly",
    "https://www.googleapis.com/auth/drive.readonly",
)
DEFAULT_TIMEOUT = 30.0


class KeywordSourceError(RuntimeError):
    """The keyword source (sheet or CSV file) could not be read."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class SheetError(KeywordSourceError):
    """Reading the Google Sheet failed.

    `reason` is one of: not_configured, bad_credentials, auth_failed, not_found,
    permission_denied, worksheet_not_found, empty, unavailable.
    """


def _api_message(exc: Any) -> str:
    error = getattr(exc, "error", None)
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(exc)


def fetch_rows(sheet_key: str, service_account_file: str, worksheet: str | None = None, *,
               timeout: float = DEFAULT_TIMEOUT) -> list[list[str]]:
    """All cells of the worksheet (`worksheet` by title, else the first one), as strings.

    Raises `SheetError`; an empty worksheet is an error too (reason `empty`).
    """
    import gspread
    import requests
    from google.auth import exceptions as gauth

    if not sheet_key:
        raise SheetError("not_configured", "GSHEET_KEY is not set")
    if not service_account_file:
        raise SheetError("not_configured", "GOOGLE_SERVICE_ACCOUNT_FILE is not set")
    where = f"spreadsheet {sheet_key}"
    try:
        client = gspread.service_account(filename=service_account_file, scopes=list(SCOPES))
    except FileNotFoundError:
        raise SheetError("bad_credentials", f"service account file {service_account_file} "
                                            "does not exist") from None
    except (ValueError, KeyError, json.JSONDecodeError) as exc:  # not JSON, fields or key bad
        raise SheetError("bad_credentials", f"service account file {service_account_file} is "
                                            f"not a valid service account key: {exc}") from None
    client.set_timeout(timeout)
    try:
        spreadsheet = client.open_by_key(sheet_key)
        if worksheet:
            where = f"worksheet {worksheet!r} of spreadsheet {sheet_key}"
            ws = spreadsheet.worksheet(worksheet)
        else:
            ws = spreadsheet.sheet1
            where = f"worksheet {ws.title!r} of spreadsheet {sheet_key}"
        values = ws.get_all_values()
    except gauth.RefreshError as exc:
        raise SheetError("auth_failed", "Google refused the service account's credentials "
                                        f"({_refresh_reason(exc)}); check "
                                        "GOOGLE_SERVICE_ACCOUNT_FILE (key revoked or wrong "
                                        "project?)") from None
    except gauth.TransportError as exc:
        raise SheetError("unavailable", f"Google's token endpoint unreachable: {exc}") from None
    except gauth.GoogleAuthError as exc:
        raise SheetError("auth_failed", f"Google authentication failed: {exc}") from None
    except gspread.SpreadsheetNotFound:
        raise SheetError("not_found", f"{where} not found: check GSHEET_KEY and share the sheet "
                                      "with the service account's e-mail") from None
    except PermissionError:  # gspread's translation of 403 in open_by_key
        raise SheetError("permission_denied", f"no access to {where}: share it with the "
                                              "service account's e-mail") from None
    except gspread.WorksheetNotFound:
        raise SheetError("worksheet_not_found", f"{where} not found (GSHEET_WORKSHEET)") from None
    except gspread.exceptions.APIError as exc:
        status = exc.response.status_code
        if status == 404:
            raise SheetError("not_found", f"{where} not found: {_api_message(exc)}") from None
        if status in (401, 403):
            raise SheetError("permission_denied",
                             f"no access to {where}: {_api_message(exc)}") from None
        raise SheetError("unavailable", f"Google Sheets answered {status} for {where}: "
                                        f"{_api_message(exc)}") from None
    except requests.RequestException as exc:
        raise SheetError("unavailable", f"Google Sheets unreachable ({type(exc).__name__}): "
                                        f"{exc}") from None
    rows = [["" if c is None else str(c) for c in row] for row in values or []]
    if not any(cell.strip() for row in rows for cell in row):
        raise SheetError("empty", f"{where} is empty")
    log.info("read %d rows from %s", len(rows), where)
    return rows


def _refresh_reason(exc: Exception) -> str:
    """`invalid_grant: ...` out of google-auth's RefreshError arguments."""
    for arg in exc.args:
        if isinstance(arg, dict) and arg.get("error"):
            desc = arg.get("error_description")
            return f"{arg['error']}: {desc}" if desc else str(arg["error"])
    return str(exc.args[0]) if exc.args else type(exc).__name__

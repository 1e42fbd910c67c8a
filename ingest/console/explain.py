"""Refusals in plain words, for the support lead who forwards them to the sender's admin.

The reason codes are the stable ones of docs/operators.md; the words say
what the *sender's* side has to change, because that is usually who can.
"""

from __future__ import annotations

from typing import Any

_EXPLAINED: dict[str, str] = {
    "unknown_mailbox": "The address the mail was sent to is not one of our service mailboxes. "
    "The sender should check the address for typos; if it should exist, add it to the "
    "configuration's mailboxes.",
    "alias_not_supported": "The mail was sent to a sub-address (support+tag@…). Service "
    "mailboxes accept only their exact address: send to it without the tag.",
    "relay_denied": "The recipient is not in a domain we receive for (or used a routing form "
    "such as %, ! or a quoted local part). We only accept mail for our own mailboxes.",
    "too_many_recipients": "Too many recipients in one message; the sending server retries "
    "the rest by itself, nothing is lost.",
    "policy_split": "Mailboxes with different policies in one transaction; the sending server "
    "retries them separately by itself, nothing is lost.",
    "message_too_big": "The message is larger than we accept. The sender should send large "
    "files as a link instead of an attachment.",
    "line_too_long": "The message has a line longer than the SMTP standard allows; the "
    "sending mail server or program is broken and must encode long lines.",
    "dmarc_reject": "The sender's domain publishes a DMARC policy of p=reject, and this "
    "message passed neither SPF nor DKIM in alignment with the From domain. The sender's "
    "admin must make their mail pass: add the sending service to the domain's SPF record, "
    "and sign with DKIM for the From domain. If a forwarder breaks the signature, forward "
    "natively (keeping DKIM intact) or have the forwarder ARC-seal.",
    "manual_forward": 'Someone forwarded this message by hand ("Forward" in a mail program), '
    "which loses the original sender, Message-ID and signature. Configure native forwarding "
    "(a server rule or mailbox forwarding) instead.",
    "from_malformed": "The From header does not name exactly one author address. The sending "
    "program must write one valid From address.",
    "dns_tempfail": "A DNS lookup (SPF, DKIM or DMARC) failed while checking the sender; the "
    "sending server retries by itself. If it persists, the sender's DNS servers are not "
    "answering.",
    "virus": "The antivirus scanner found a signature in the message. The sender should scan "
    "their system; the mail was not filed.",
    "blocked_attachment": "The message carries an executable or script attachment, which we "
    "never accept. Send it as a link or inside a supported format.",
    "macro_document": "The message carries an Office document with macros. Save it without "
    "macros (.docx, .xlsx) or as PDF.",
    "encrypted_archive": "The message carries an encrypted archive that cannot be scanned. "
    "Send it unencrypted or through a file-sharing link.",
    "archive_limits": "An archive in the message nests too deeply or expands too far to be "
    "scanned safely.",
    "unscannable": "The scanner could not read the message or an archive in it completely.",
    "scan_size_limit": "The message is larger than the antivirus scanner accepts.",
    "processing_failed": "We could not turn this message into a ticket after several tries. "
    "Our side must look at it (firstline queue retry after a fix); the sender need not act.",
}


def explain(reason: str) -> str:
    return _EXPLAINED.get(reason, "No explanation is recorded for this reason code.")


def _results(checks: Any) -> str:
    if isinstance(checks, list) and checks:
        return ",".join(str(c.get("result", "?")) for c in checks if isinstance(c, dict))
    return "none"


def verdict_line(details: dict[str, Any]) -> str:
    """One line for a verification's details: ``spf=fail dkim=none dmarc=fail (p=reject) …``.

    Kept in one function so that the verdict summary planned in ``policy/``
    can replace it.
    """
    if "dns" in details and "dmarc" not in details:
        return f"dns temporary failure: {details['dns']}"
    if not any(key in details for key in ("spf", "dkim", "dmarc")):
        return "not verified"
    spf = details.get("spf")
    # The MAIL FROM result (first) is the one DMARC uses; HELO's follows it in the list.
    parts = [f"spf={_results(spf[:1] if isinstance(spf, list) else spf)}",
             f"dkim={_results(details.get('dkim'))}"]  # fmt: skip
    dmarc = details.get("dmarc")
    if isinstance(dmarc, dict):
        policy = dmarc.get("policy")
        parts.append(f"dmarc={dmarc.get('result', '?')}" + (f" (p={policy})" if policy else ""))
    forwarding = details.get("forwarding")
    if isinstance(forwarding, dict):
        evidence = ", ".join(str(e) for e in forwarding.get("manual") or [])
        kind = f"forwarding={forwarding.get('kind', '?')}"
        parts.append(f"{kind} ({evidence})" if evidence else kind)
    return " ".join(parts)

"""Refusals in plain words, for the support lead who forwards them to the sender's admin.

The reason codes are the stable ones of docs/operators.md; the words say
what the *sender's* side has to change, because that is usually who can.
"""

from __future__ import annotations

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
    "insufficient_storage": "Our storage volume is nearly full, so we asked the sending "
    "server to retry later; it does so by itself and nothing is lost. Our side must free "
    "space.",
    "invalid_helo": "The sending server greeted us with a name that is not valid text "
    "(bytes that are not UTF-8). Its admin must fix the server's host name.",
    "invalid_sender": "The sender address in the SMTP envelope holds bytes that are not "
    "UTF-8. The sending server or program is broken and must write a valid address.",
    "invalid_recipient": "The recipient address holds bytes that are not UTF-8; the sending "
    "server must write a valid address.",
    "too_many_header_fields": "The message has far more header lines than real mail does; "
    "the sending program must be fixed.",
    "header_field_too_large": "One header line of the message is far longer than real mail "
    "needs (often thousands of addresses in To or Cc). Send to a list instead.",
    "header_too_large": "The message's header block is far larger than real mail needs; the "
    "sending program must be fixed.",
    "too_many_addresses": "The message names more addresses in From, To and Cc than we "
    "accept. Send to a distribution list instead of listing everyone.",
    "mime_too_deep": "The message's parts are nested deeper than any mail program writes; "
    "the sending program must be fixed.",
    "too_many_mime_parts": "The message has more parts (attachments, inline pieces) than we "
    "accept. Send fewer attachments, or one archive or link.",
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

/** Requests shaped byte for byte as Dify's HTTP Request node sends them (httpx behind it). */

/** A multipart body as httpx writes it; Dify adds the empty placeholder part when there are no files. */
export function difyMultipart(
  fields: Record<string, string>,
  files: Array<{ name: string; filename: string; type: string; data: Buffer }> = [],
) {
  const boundary = 'a4a7fa2b1c8e0d6f3b9e5c7a1d2f4e6b';
  const chunks: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  const parts =
    files.length > 0
      ? files
      : [{ name: '__multipart_placeholder__', filename: '', type: 'application/octet-stream', data: Buffer.alloc(0) }];
  for (const f of parts) {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${f.name}"; filename="${f.filename}"\r\nContent-Type: ${f.type}\r\n\r\n`,
      ),
    );
    chunks.push(f.data, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** Headers Dify adds to every request of a workflow. */
export const DIFY_HEADERS = {
  'user-agent': 'python-httpx/0.27.2',
  'x-dify-workflow-call-depth': '1',
  'x-dify-workflow-call-depth-signature': 'e3b0c44298fc1c149afbf4c8996fb924',
};

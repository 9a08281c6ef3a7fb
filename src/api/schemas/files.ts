/** Schemas of the file routes. */
import { Type } from 'typebox';
import { SandboxIdField, SandboxRefFields } from './common.js';

const RemotePath = Type.String({
  minLength: 1,
  maxLength: 4096,
  description: 'Path in the sandbox; relative paths are inside /workspace, and nothing outside /workspace is reachable.',
});

export const WriteFileBody = Type.Object({
  ...SandboxRefFields,
  content: Type.Optional(
    Type.String({ description: 'File content: text, or base64 when encoding is base64 (or send the file as a multipart part).' }),
  ),
  remote_path: Type.Optional(RemotePath),
  path: Type.Optional(RemotePath),
  encoding: Type.Optional(Type.Union([Type.Literal('utf8'), Type.Literal('utf-8'), Type.Literal('base64')], { default: 'utf8' })),
});

export const UploadFileBody = Type.Object({
  ...SandboxRefFields,
  file_url: Type.Optional(Type.String({ description: "http(s) URL to download into the sandbox (for Dify: a file variable's url)." })),
  file: Type.Optional(
    Type.Unknown({ description: 'A Dify file object (or its JSON): its url or remote_url is fetched, its filename used.' }),
  ),
  remote_filename: Type.Optional(RemotePath),
  remote_path: Type.Optional(RemotePath),
});

export const FileWrittenResponse = Type.Object({
  status: Type.Literal('success'),
  sandbox_id: Type.String(),
  remote_path: Type.String({ description: 'Absolute path of the file inside the sandbox.' }),
  size: Type.Integer(),
  files: Type.Optional(
    Type.Array(Type.Object({ remote_path: Type.String(), size: Type.Integer() }), {
      description: 'Every file stored, when several came in one multipart request.',
    }),
  ),
});

export const DownloadFileBody = Type.Object({
  ...SandboxRefFields,
  remote_path: Type.Optional(RemotePath),
  path: Type.Optional(RemotePath),
  as_file: Type.Optional(
    Type.Boolean({ default: false, description: 'Answer with the file itself (Content-Disposition: attachment) instead of a link.' }),
  ),
});

export const DownloadFileResponse = Type.Object({
  sandbox_id: Type.String(),
  filename: Type.String(),
  remote_path: Type.String(),
  download_url: Type.String({ description: 'Absolute, signed, time-limited URL serving the bytes without the API key (FILE_URL_TTL_S).' }),
  size: Type.Integer(),
  mime_type: Type.String(),
});

export const ListFilesBody = Type.Object({
  ...SandboxRefFields,
  path: Type.Optional(Type.String({ default: '.', description: 'Directory to list (default: the workspace).' })),
  recursive: Type.Optional(Type.Boolean({ default: false })),
});

export const FileEntrySchema = Type.Object({
  name: Type.String(),
  path: Type.String(),
  type: Type.Union([Type.Literal('file'), Type.Literal('directory'), Type.Literal('symlink'), Type.Literal('other')]),
  size: Type.Integer(),
  modified_at: Type.String({ format: 'date-time' }),
});

export const ListFilesResponse = Type.Object({
  sandbox_id: Type.String(),
  path: Type.String(),
  entries: Type.Array(FileEntrySchema),
  truncated: Type.Boolean(),
});

export const FileQuery = Type.Object({
  exp: Type.Optional(Type.String({ description: 'Expiry of a signed URL (Unix seconds).' })),
  sig: Type.Optional(Type.String({ description: 'Signature of a signed URL.' })),
});

export const FileParams = Type.Object({
  sandbox_id: SandboxIdField,
  '*': Type.String({ description: 'Path of the file inside the sandbox.' }),
});

/**
 * A response body as text, read only up to `maxBytes`: past that the stream is destroyed (the
 * rest is never read) and `tooLarge()` is thrown. For answers from peers, whose size we do not
 * control.
 */
export async function readCapped(body: AsyncIterable<Buffer> & { destroy(): void }, maxBytes: number, tooLarge: () => Error): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of body) {
    bytes += chunk.length;
    if (bytes > maxBytes) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

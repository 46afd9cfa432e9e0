// The baseline for the load benchmark: Express 5 answering the participant routes with no work —
// no body parsing, no validation, no database — in its own process, like the real server.
import express from 'express';

const app = express();
app.set('etag', false);
app.post('/api/sessions', (_req, res) => {
  res.status(201).json({ session: 'bare', token: 'x', trials: [], resume_at: 0 });
});
app.put('/api/sessions/:id/trials/:seq', (req, res) => {
  res.json({ seq: Number(req.params.seq), recorded_at: '2030-01-01T00:00:00.000Z' });
});
app.post('/api/sessions/:id/finish', (_req, res) => {
  res.json({ outcome: 'completed', code: null, redirect: null });
});
const server = app.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  console.log(`bare listening on http://127.0.0.1:${port}`);
});
server.keepAliveTimeout = 5000;
process.on('SIGTERM', () => server.close(() => process.exit(0)));

// The idle benchmark's peer: node with ws, the same echo as bench/idle/ws.lsp.
//   node bench/idle/node-ws.js PORT
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2]), perMessageDeflate: false,
                                  backlog: 4096 });
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));

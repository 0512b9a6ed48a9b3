// A human player: matchmaking over HTTP, then one game over the WebSocket (k6/ws, blocking).
// Every wait is bounded; the ±1 concurrency deltas are always closed when a started game is left.
import { sleep } from 'k6';
import ws from 'k6/ws';
import { closeStatus } from './api.js';
import {
  aiFallback, aiMoveLatency, gameAborts, gamesActiveDelta, gamesCompleted, moveE2eLatency,
  moveServerProcessing, moveStalled, playersActiveDelta, setPhase, wsErrors, wsRateLimited,
} from './metrics.js';

const AUTH_TIMEOUT_MS = 10000;
const START_TIMEOUT_MS = 30000;
const WATCHDOG_MS = 500;
const MAX_JOIN_ATTEMPTS = 3;
const RETRY_MS = 1000;

// Tag objects reused for the diagnostic counters (low cardinality).
const ABORT = {};
['connect_failed', 'auth_failed', 'start_timeout', 'ack_timeout', 'idle_timeout', 'lost_game', 'join_failed',
  'socket_closed'].forEach((reason) => { ABORT[reason] = { reason }; });
const WS_ERROR = {};
function wsErrorTags(code) {
  const key = typeof code === 'string' && code.length < 40 ? code : 'other';
  return WS_ERROR[key] || (WS_ERROR[key] = { code: key });
}

export class Player {
  constructor(cfg, api) {
    this.cfg = cfg;
    this.api = api;
    const g = cfg.game;
    this.humans = g.playersPerGame - g.aiSeats;
    this.aiSeats = g.aiSeats;
    this.thinkMs = g.thinkTimeMs;
    this.stallMs = g.stallMs;
    this.ackTimeoutMs = Math.min(30000, Math.max(10000, 5 * g.stallMs));
    // No message at all for this long in a started game means it is stuck (e.g. a seat whose
    // player never connected): leave. Turns come every ~thinkTimeMs, AI moves within its timeout.
    this.idleTimeoutMs = Math.min(30000, Math.max(10000, 4 * g.thinkTimeMs + 2 * g.stallMs + 5000));
    this.cells = g.board === 'square19' ? 361 : g.board === 'hex8' ? 61 : 64;
    this.listQuery = `status=waiting&board=${encodeURIComponent(g.board)}&maxPlayers=${g.playersPerGame}` +
      `&aiSeats=${g.aiSeats}`;
    this.createBody = JSON.stringify({
      board: g.board, maxPlayers: g.playersPerGame, aiSeats: g.aiSeats, movesPerGame: g.movesPerGame,
    });
    this.wsParams = { tags: { name: 'ws_play' } };
    this.moveSeq = 0;
    this.s = null; // the current game session
  }

  /** One iteration: token, matchmaking, one game. Returns normally in every case. */
  iteration() {
    if (!this.api.ensureToken()) {
      sleep(RETRY_MS / 1000 * (1 + Math.random()));
      return;
    }
    const match = this.matchmake();
    if (match === null) {
      sleep(RETRY_MS / 1000 * (1 + Math.random()));
      return;
    }
    this.play(match);
    // A short, jittered pause between games so players who finished together do not all
    // create games at the same instant.
    sleep(0.1 + Math.random() * 0.5);
  }

  /** {id, seat, creator} of a game to play, or null. */
  matchmake() {
    if (this.humans > 1) {
      const games = this.api.listGames(this.listQuery);
      if (games !== null) {
        let attempts = 0;
        for (let i = 0; i < games.length && attempts < MAX_JOIN_ATTEMPTS; i++) {
          const game = games[i];
          if (this.seatedIn(game)) continue; // our pool user already sits there (shared user)
          attempts++;
          const joined = this.api.joinGame(game.id);
          if (joined.joined) return { id: game.id, seat: joined.seat === null ? -1 : joined.seat, creator: false };
          if (joined.status !== 409) break; // failed: classified already; create instead
        }
      } else if (this.api.token === null) {
        return null;
      }
    }
    const game = this.api.createGame(this.createBody);
    if (game === null) return null;
    return { id: game.id, seat: 0, creator: true };
  }

  seatedIn(game) {
    const me = this.api.userId;
    const seats = game.seats;
    if (!Array.isArray(seats)) return false;
    for (let i = 0; i < seats.length; i++) if (seats[i] && seats[i].userId === me) return true;
    return false;
  }

  /** Play one game over the WebSocket until game_over, an error, or a bounded wait runs out. */
  play(match) {
    if (!this.api.ensureToken()) return;
    const s = {
      id: match.id, seat: match.seat, creator: match.creator,
      authed: false, connectSampled: false, started: false, ended: false, finishedSeen: false, lost: false,
      pendingId: null, sentAt: 0, turnScheduled: false, aiChainAt: 0,
      openedAt: Date.now(), lastMsgAt: Date.now(), startDeadline: 0, socket: null,
    };
    this.s = s;
    const self = this;
    setPhase();
    let res = null;
    try {
      res = ws.connect(this.cfg.wsUrl, this.wsParams, function (socket) {
        s.socket = socket;
        socket.on('open', () => {
          socket.send(JSON.stringify({ type: 'auth', token: self.api.token }));
        });
        socket.on('message', (text) => self.onMessage(socket, s, text));
        socket.on('close', (code) => self.onClose(s, code));
        socket.on('error', () => {
          // The close that follows ends the session; nothing secret is logged.
        });
        socket.setInterval(() => self.watchdog(socket, s), WATCHDOG_MS);
      });
    } catch (e) {
      res = null;
    }
    if (!s.connectSampled) {
      // The handshake itself failed (no 101) or the socket died before auth_ok.
      const status = res && res.status && res.status !== 101 ? res.status : 0;
      this.connectSample(s, status);
      gameAborts.add(1, ABORT.connect_failed);
    }
    this.endSession(s);
    if (s.lost) {
      // The server does not know the game we just created or joined: confirm over HTTP, where a
      // 404 counts as an id-lifecycle mismatch.
      this.api.gameState(s.id, true);
    }
    this.s = null;
  }

  connectSample(s, status) {
    s.connectSampled = true;
    this.api.wsConnected(status);
  }

  onMessage(socket, s, text) {
    const now = Date.now();
    s.lastMsgAt = now;
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      return;
    }
    switch (msg.type) {
      case 'auth_ok':
        s.authed = true;
        this.connectSample(s, 101);
        s.startDeadline = now + START_TIMEOUT_MS;
        socket.send(JSON.stringify({ type: 'join', gameId: s.id }));
        break;
      case 'joined':
        if (typeof msg.seat === 'number') s.seat = msg.seat;
        break;
      case 'game_started':
        if (msg.gameId === s.id && !s.started && !s.ended) this.startGame(s);
        break;
      case 'turn':
        if (msg.gameId === s.id && msg.seat === s.seat && s.started && !s.ended) this.myTurn(socket, s);
        break;
      case 'move_ack':
        if (s.pendingId !== null && msg.moveId === s.pendingId) this.acked(s, msg, now);
        break;
      case 'move':
        s.aiChainAt = 0; // another human moved: the AI moves that follow are theirs to measure
        break;
      case 'ai_move':
        if (s.aiChainAt > 0) {
          setPhase();
          aiMoveLatency.add(now - s.aiChainAt);
          aiFallback.add(msg.fallback === true);
          s.aiChainAt = now;
        }
        break;
      case 'game_over':
        if (msg.gameId === s.id) {
          s.finishedSeen = true;
          if (s.started && msg.reason === 'completed') {
            setPhase();
            gamesCompleted.add(1);
          }
          this.endSession(s);
          socket.close();
        }
        break;
      case 'error':
        this.onServerError(socket, s, msg);
        break;
      default:
        break;
    }
  }

  startGame(s) {
    s.started = true;
    setPhase();
    if (s.creator) {
      gamesActiveDelta.add(1);
      playersActiveDelta.add(1 + this.aiSeats);
    } else {
      playersActiveDelta.add(1);
    }
  }

  /** Close the concurrency intervals of a started game exactly once. */
  endSession(s) {
    if (s.ended) return;
    s.ended = true;
    if (!s.started) return;
    setPhase();
    if (s.creator) {
      gamesActiveDelta.add(-1);
      playersActiveDelta.add(-1 - this.aiSeats);
    } else {
      playersActiveDelta.add(-1);
    }
  }

  myTurn(socket, s) {
    if (s.pendingId !== null || s.turnScheduled) return;
    s.turnScheduled = true;
    s.aiChainAt = 0;
    const began = Date.now();
    // Look at the board (HTTP) while thinking; the fetch time comes out of the think time.
    // Keep the token valid during the game too: a game can outlive the token (plan §8, 401s).
    const game = this.api.ensureToken() ? this.api.gameState(s.id, !s.finishedSeen) : null;
    if (game !== null && game.status === 'finished') s.finishedSeen = true;
    const think = this.thinkMs * (0.75 + 0.5 * Math.random());
    const wait = Math.max(1, think - (Date.now() - began));
    socket.setTimeout(() => this.sendMove(socket, s), wait);
  }

  sendMove(socket, s) {
    s.turnScheduled = false;
    if (s.ended) return;
    this.moveSeq++;
    const id = `m${this.moveSeq}`;
    s.pendingId = id;
    s.stallSampled = false;
    socket.send(JSON.stringify({
      type: 'move', gameId: s.id, moveId: id,
      move: { from: Math.floor(Math.random() * this.cells), to: Math.floor(Math.random() * this.cells) },
    }));
    s.sentAt = Date.now();
  }

  acked(s, msg, now) {
    const latency = now - s.sentAt;
    s.pendingId = null;
    setPhase();
    moveE2eLatency.add(latency);
    if (typeof msg.serverProcessingMs === 'number') moveServerProcessing.add(msg.serverProcessingMs);
    moveStalled.add(latency > this.stallMs);
    if (this.aiSeats > 0) s.aiChainAt = now;
  }

  onServerError(socket, s, msg) {
    setPhase();
    const code = msg.code;
    wsErrors.add(1, wsErrorTags(code));
    if (code === 'rate_limited') {
      if (!s.authed) return; // the close (4429) follows and is classified as a 429 connect
      wsRateLimited();
      if (msg.moveId !== undefined && msg.moveId === s.pendingId) {
        s.pendingId = null; // rejected, not stalled: try again shortly
        s.turnScheduled = true;
        socket.setTimeout(() => this.sendMove(socket, s), RETRY_MS);
      } else if (!s.started && msg.moveId === undefined) {
        socket.setTimeout(() => socket.send(JSON.stringify({ type: 'join', gameId: s.id })), RETRY_MS);
      }
      return;
    }
    if (code === 'unauthorized' && !s.authed) {
      this.connectSample(s, 401);
      gameAborts.add(1, ABORT.auth_failed);
      return; // the server closes with 4401
    }
    if (code === 'not_found' && (msg.gameId === s.id || msg.gameId === undefined)) {
      s.lost = !s.finishedSeen;
      gameAborts.add(1, ABORT.lost_game);
      this.leave(socket, s);
      return;
    }
    if (code === 'game_full' && !s.started) {
      gameAborts.add(1, ABORT.join_failed);
      this.leave(socket, s);
      return;
    }
    if (msg.moveId !== undefined && msg.moveId === s.pendingId) {
      // not_your_turn / invalid_move: the move is gone; wait for the next turn.
      s.pendingId = null;
    }
  }

  watchdog(socket, s) {
    if (s.ended) {
      socket.close();
      return;
    }
    const now = Date.now();
    if (!s.authed) {
      if (now - s.openedAt > AUTH_TIMEOUT_MS) {
        if (!s.connectSampled) this.connectSample(s, 0);
        gameAborts.add(1, ABORT.auth_failed);
        this.leave(socket, s);
      }
      return;
    }
    if (s.pendingId !== null) {
      const waited = now - s.sentAt;
      if (waited > this.ackTimeoutMs) {
        setPhase();
        moveStalled.add(true);
        gameAborts.add(1, ABORT.ack_timeout);
        this.leave(socket, s);
      }
      return;
    }
    if (!s.started) {
      if (now > s.startDeadline) {
        setPhase();
        gameAborts.add(1, ABORT.start_timeout);
        this.leave(socket, s);
      }
      return;
    }
    if (now - s.lastMsgAt > this.idleTimeoutMs && !s.turnScheduled) {
      setPhase();
      gameAborts.add(1, ABORT.idle_timeout);
      this.leave(socket, s);
    }
  }

  leave(socket, s) {
    this.endSession(s);
    socket.close();
  }

  onClose(s, code) {
    if (!s.connectSampled) {
      this.connectSample(s, closeStatus(code));
      gameAborts.add(1, ABORT.auth_failed);
    } else if (!s.ended) {
      setPhase();
      gameAborts.add(1, ABORT.socket_closed);
    }
    this.endSession(s);
  }
}

// gust's built-in Java invoker: loads the class named by GUST_HANDLER from the function's
// jars (or classes/ directory) and serves HTTP/1.1 on the Unix socket GUST_SOCKET, one
// thread per connection. The class implements java.util.function.Function (riff style):
// Function<String, ?> gets the body as text, Function<byte[], ?> as bytes. A String result
// is sent as text, byte[] as bytes, anything else as its toString(). A thrown exception is
// a 500 with the message; its stack trace goes to stderr (gust logs).
//
// Only the JDK's own classes are used, so it compiles once with javac and starts fast.
package gust;

import java.io.*;
import java.lang.reflect.*;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;
import java.util.function.Function;

public final class Invoker {
    /** The call id of the request the current thread serves, for tagging output lines. */
    static final ThreadLocal<String> CALL = new ThreadLocal<>();

    public static void main(String[] args) throws Exception {
        System.setOut(new Tagged(new FileOutputStream(FileDescriptor.out)));
        System.setErr(new Tagged(new FileOutputStream(FileDescriptor.err)));
        Function<Object, Object> fn;
        boolean bytes;
        String handler = System.getenv("GUST_HANDLER");
        try {
            Class<?> cls = Class.forName(handler);
            if (!Function.class.isAssignableFrom(cls)) {
                throw new IllegalArgumentException(handler + " does not implement java.util.function.Function");
            }
            @SuppressWarnings("unchecked")
            Function<Object, Object> f = (Function<Object, Object>) cls.getDeclaredConstructor().newInstance();
            fn = f;
            bytes = takesBytes(cls);
        } catch (Throwable t) {
            t.printStackTrace();
            System.err.println("gust: could not load handler " + handler);
            System.err.flush();
            System.exit(3);
            return;
        }
        Path socket = Path.of(System.getenv("GUST_SOCKET"));
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(socket), 1024);
        final Function<Object, Object> handle = fn;
        final boolean raw = bytes;
        while (true) {
            SocketChannel conn = server.accept();
            Thread t = new Thread(() -> serve(conn, handle, raw));
            t.setDaemon(true);
            t.start();
        }
    }

    /** Whether apply's parameter is byte[] (else the body arrives as a String). */
    static boolean takesBytes(Class<?> cls) {
        for (Method m : cls.getMethods()) {
            if (m.getName().equals("apply") && m.getParameterCount() == 1 && !m.isBridge()) {
                return m.getParameterTypes()[0] == byte[].class;
            }
        }
        return false;
    }

    static void serve(SocketChannel conn, Function<Object, Object> fn, boolean raw) {
        try (conn) {
            InputStream in = new BufferedInputStream(Channels.newInputStream(conn));
            OutputStream out = new BufferedOutputStream(Channels.newOutputStream(conn));
            while (true) {
                String requestLine = readLine(in);
                if (requestLine == null || requestLine.isEmpty()) {
                    return;
                }
                Map<String, String> headers = new HashMap<>();
                for (String line = readLine(in); line != null && !line.isEmpty(); line = readLine(in)) {
                    int colon = line.indexOf(':');
                    if (colon > 0) {
                        headers.put(line.substring(0, colon).trim().toLowerCase(Locale.ROOT), line.substring(colon + 1).trim());
                    }
                }
                byte[] body = readBody(in, headers);
                CALL.set(headers.getOrDefault("x-call-id", ""));
                int status = 200;
                String type;
                byte[] answer;
                try {
                    Object result = fn.apply(raw ? body : new String(body, StandardCharsets.UTF_8));
                    if (result instanceof byte[] b) {
                        answer = b;
                        type = "application/octet-stream";
                    } else {
                        answer = String.valueOf(result).getBytes(StandardCharsets.UTF_8);
                        type = "text/plain; charset=utf-8";
                    }
                } catch (Throwable t) {
                    t.printStackTrace();
                    status = 500;
                    type = "application/json";
                    String message = t.getMessage() == null ? t.toString() : t.getMessage();
                    answer = ("{\"error\":\"handler_error\",\"message\":" + json(message) + "}").getBytes(StandardCharsets.UTF_8);
                } finally {
                    System.out.flush();
                    System.err.flush();
                    CALL.remove();
                }
                String head = "HTTP/1.1 " + status + (status == 200 ? " OK" : " Internal Server Error") + "\r\n"
                        + "Content-Type: " + type + "\r\nContent-Length: " + answer.length + "\r\n\r\n";
                out.write(head.getBytes(StandardCharsets.ISO_8859_1));
                out.write(answer);
                out.flush();
            }
        } catch (IOException e) {
            // The gateway closed the connection; nothing to answer.
        }
    }

    static byte[] readBody(InputStream in, Map<String, String> headers) throws IOException {
        String te = headers.getOrDefault("transfer-encoding", "");
        if (te.toLowerCase(Locale.ROOT).contains("chunked")) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            while (true) {
                String size = readLine(in);
                if (size == null) {
                    throw new EOFException("chunked body cut short");
                }
                int n = Integer.parseInt(size.split(";", 2)[0].trim(), 16);
                if (n == 0) {
                    for (String l = readLine(in); l != null && !l.isEmpty(); l = readLine(in)) { }
                    return buf.toByteArray();
                }
                buf.write(in.readNBytes(n));
                readLine(in);
            }
        }
        int len = Integer.parseInt(headers.getOrDefault("content-length", "0"));
        byte[] body = in.readNBytes(len);
        if (body.length < len) {
            throw new EOFException("body cut short");
        }
        return body;
    }

    static String readLine(InputStream in) throws IOException {
        StringBuilder sb = new StringBuilder();
        int c;
        while ((c = in.read()) != -1) {
            if (c == '\n') {
                int n = sb.length();
                return n > 0 && sb.charAt(n - 1) == '\r' ? sb.substring(0, n - 1) : sb.toString();
            }
            sb.append((char) c);
        }
        return sb.length() == 0 ? null : sb.toString();
    }

    static String json(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }

    /** Prefixes every line written while a call is being served with \x1f<call id>\x1f. */
    static final class Tagged extends PrintStream {
        private boolean atStart = true;

        Tagged(OutputStream out) {
            super(new BufferedOutputStream(out), true, StandardCharsets.UTF_8);
        }

        @Override
        public synchronized void write(byte[] buf, int off, int len) {
            String call = CALL.get();
            for (int i = off; i < off + len; i++) {
                if (atStart && call != null && !call.isEmpty()) {
                    super.write(0x1f);
                    byte[] id = call.getBytes(StandardCharsets.UTF_8);
                    super.write(id, 0, id.length);
                    super.write(0x1f);
                }
                super.write(buf[i]);
                atStart = buf[i] == '\n';
            }
        }

        @Override
        public synchronized void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }
    }
}

//! sh: the libos-unix shell. Runs a script (`sh FILE`), one command line
//! (`sh -c LINE`), or reads lines from standard input, with a prompt and
//! line editing (echo, backspace, ctrl-U, ctrl-C, ctrl-D) when that is the
//! console.
//!
//! A line is a list of pipelines joined by `;`, `&&` and `||`; a pipeline
//! is commands joined by `|`; a command is words with redirections `<
//! FILE`, `> FILE` and `>> FILE`. Words may be quoted ('single': literal;
//! "double": `$VAR` expanded) and `$VAR`, `${VAR}` and `$?` (the last
//! status) are expanded. `#` starts a comment. Built in: `cd [DIR]`,
//! `exit [N]`, `export NAME=VALUE`, `unset NAME`, `NAME=VALUE`, `pwd`,
//! `status`. Everything else is a program from `/bin`, run by fork and
//! exec; a pipeline's status is its last command's (128 + N when killed
//! by signal N).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use ulib::fork::fork;
use ulib::io::{self, Fd, O_APPEND, O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY};
use ulib::process::{exit, waitpid};
use ulib::spawn::exec;
use ulib::{env, errln, out, Errno, WaitStatus};

ulib::program_main!(main);

fn main(args: &[&str]) -> i32 {
    let mut shell = Shell { status: 0 };
    match args.get(1).copied() {
        Some("-c") => {
            let line = args[2..].join(" ");
            shell.run_line(&line);
            shell.status
        }
        Some(path) => {
            let fd = match io::open(path, O_RDONLY) {
                Ok(fd) => fd,
                Err(error) => {
                    errln!("sh: {}: {}", path, error);
                    return 127;
                }
            };
            let text = io::read_to_end(fd).unwrap_or_default();
            let _ = io::close(fd);
            for line in String::from_utf8_lossy(&text).lines() {
                shell.run_line(line);
            }
            shell.status
        }
        None => {
            let interactive = io::fds()[0] == Fd::Console;
            let mut input = Input { pending: Vec::new(), interactive };
            loop {
                if interactive {
                    out!("{}$ ", io::getcwd());
                }
                match input.line() {
                    Some(line) => shell.run_line(&line),
                    None => return shell.status,
                }
            }
        }
    }
}

/// Lines from standard input, edited when it is the console.
struct Input {
    pending: Vec<u8>,
    interactive: bool,
}

impl Input {
    fn byte(&mut self) -> Option<u8> {
        if self.pending.is_empty() {
            let mut buf = [0u8; 256];
            match io::read(0, &mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        Some(self.pending.remove(0))
    }

    /// The next line; None at end of input (ctrl-D on an empty console line).
    fn line(&mut self) -> Option<String> {
        let mut line: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = self.byte() else {
                return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned());
            };
            match byte {
                b'\r' | b'\n' => {
                    if self.interactive {
                        let _ = io::write_all(1, b"\n");
                    }
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                0x08 | 0x7f if self.interactive => {
                    if line.pop().is_some() {
                        let _ = io::write_all(1, b"\x08 \x08");
                    }
                }
                0x15 if self.interactive => {
                    for _ in 0..line.len() {
                        let _ = io::write_all(1, b"\x08 \x08");
                    }
                    line.clear();
                }
                0x04 if self.interactive && line.is_empty() => return None,
                // ctrl-C: drop the line.
                0x03 if self.interactive => {
                    let _ = io::write_all(1, b"^C\n");
                    return Some(String::new());
                }
                byte if byte >= 0x20 || byte == b'\t' => {
                    line.push(byte);
                    if self.interactive {
                        let _ = io::write_all(1, &[byte]);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A piece of a word: literal text, or a variable expanded when the
/// command that holds it runs (so `X=1; echo $X` sees the new value).
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A token of a line.
#[derive(Debug, PartialEq)]
enum Token {
    Word(Vec<Piece>),
    Pipe,
    And,
    Or,
    Semi,
    In,
    Out,
    Append,
}

struct Shell {
    status: i32,
}

impl Shell {
    fn expand_var(&self, name: &str) -> String {
        if name == "?" {
            return self.status.to_string();
        }
        env::get(name).unwrap_or_default()
    }

    /// A word's text now (its variables expanded).
    fn expand(&self, pieces: &[Piece]) -> String {
        let mut word = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => word.push_str(text),
                Piece::Var(name) => word.push_str(&self.expand_var(name)),
            }
        }
        word
    }

    /// Split a line into tokens, honouring quotes; variables are kept to
    /// be expanded when their command runs.
    fn tokenize(&self, line: &str) -> Result<Vec<Token>, &'static str> {
        let chars: Vec<char> = line.chars().collect();
        let mut tokens = Vec::new();
        let mut word = Word::default();
        let mut in_word = false;
        let mut i = 0;
        let flush = |word: &mut Word, in_word: &mut bool, tokens: &mut Vec<Token>| {
            if *in_word {
                tokens.push(Token::Word(core::mem::take(word).finish()));
                *in_word = false;
            }
        };
        while i < chars.len() {
            let c = chars[i];
            match c {
                '#' if !in_word => break,
                ' ' | '\t' => flush(&mut word, &mut in_word, &mut tokens),
                '|' | '&' | ';' | '<' | '>' => {
                    flush(&mut word, &mut in_word, &mut tokens);
                    let next = chars.get(i + 1).copied();
                    let token = match (c, next) {
                        ('|', Some('|')) => Some(Token::Or),
                        ('&', Some('&')) => Some(Token::And),
                        ('>', Some('>')) => Some(Token::Append),
                        _ => None,
                    };
                    if let Some(token) = token {
                        tokens.push(token);
                        i += 1;
                    } else {
                        tokens.push(match c {
                            '|' => Token::Pipe,
                            ';' => Token::Semi,
                            '<' => Token::In,
                            '>' => Token::Out,
                            _ => return Err("background jobs (&) are not supported"),
                        });
                    }
                }
                '\'' => {
                    in_word = true;
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' {
                        word.push(chars[i]);
                        i += 1;
                    }
                    if i == chars.len() {
                        return Err("unterminated quote");
                    }
                }
                '"' => {
                    in_word = true;
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '$' {
                            i = self.variable(&chars, i, &mut word);
                        } else {
                            word.push(chars[i]);
                            i += 1;
                        }
                    }
                    if i == chars.len() {
                        return Err("unterminated quote");
                    }
                }
                '$' => {
                    in_word = true;
                    i = self.variable(&chars, i, &mut word);
                    continue;
                }
                '\\' if i + 1 < chars.len() => {
                    in_word = true;
                    word.push(chars[i + 1]);
                    i += 1;
                }
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
            i += 1;
        }
        flush(&mut word, &mut in_word, &mut tokens);
        Ok(tokens)
    }

    /// Record the variable at `chars[at]` (a `$`) in `word`; the index after it.
    fn variable(&self, chars: &[char], at: usize, word: &mut Word) -> usize {
        let mut i = at + 1;
        let name: String = if chars.get(i) == Some(&'{') {
            let start = i + 1;
            while i < chars.len() && chars[i] != '}' {
                i += 1;
            }
            let name = chars[start..i.min(chars.len())].iter().collect();
            i += 1;
            name
        } else if chars.get(i) == Some(&'?') {
            i += 1;
            String::from("?")
        } else {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            chars[start..i].iter().collect()
        };
        if name.is_empty() {
            word.push('$');
        } else {
            word.var(name);
        }
        i
    }

    fn run_line(&mut self, line: &str) {
        let tokens = match self.tokenize(line) {
            Ok(tokens) => tokens,
            Err(why) => {
                errln!("sh: {}", why);
                self.status = 2;
                return;
            }
        };
        // Split into pipelines joined by ; && ||, left to right.
        let mut run_next = true;
        let mut current: Vec<Token> = Vec::new();
        let mut tokens = tokens.into_iter().peekable();
        loop {
            let token = tokens.next();
            match token {
                Some(Token::Semi) | Some(Token::And) | Some(Token::Or) | None => {
                    if !current.is_empty() && run_next {
                        self.run_pipeline(core::mem::take(&mut current));
                    }
                    current.clear();
                    run_next = match token {
                        Some(Token::And) => self.status == 0,
                        Some(Token::Or) => self.status != 0,
                        _ => true,
                    };
                    if token.is_none() {
                        return;
                    }
                }
                Some(other) => current.push(other),
            }
        }
    }

    fn run_pipeline(&mut self, tokens: Vec<Token>) {
        let mut commands: Vec<Command> = Vec::new();
        let mut command = Command::default();
        let mut tokens = tokens.into_iter();
        while let Some(token) = tokens.next() {
            match token {
                Token::Word(word) => command.words.push(self.expand(&word)),
                Token::Pipe => commands.push(core::mem::take(&mut command)),
                Token::In | Token::Out | Token::Append => {
                    let Some(Token::Word(path)) = tokens.next() else {
                        errln!("sh: a redirection needs a file name");
                        self.status = 2;
                        return;
                    };
                    command.redirects.push((token, self.expand(&path)));
                }
                _ => {}
            }
        }
        commands.push(command);
        if commands.iter().any(|c| c.words.is_empty() && c.redirects.is_empty()) {
            errln!("sh: syntax error near |");
            self.status = 2;
            return;
        }
        if commands.len() == 1 {
            if let Some(status) = self.builtin(&commands[0].words) {
                self.status = status;
                return;
            }
        }
        self.status = spawn_pipeline(&commands);
    }

    /// A built-in command's status, or None if `words` is not one.
    fn builtin(&mut self, words: &[String]) -> Option<i32> {
        let first = words.first()?;
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        Some(match args[0] {
            "cd" => {
                let home = env::get("HOME").unwrap_or_else(|| String::from("/"));
                let dir = args.get(1).copied().unwrap_or(home.as_str());
                match io::chdir(dir) {
                    Ok(()) => 0,
                    Err(error) => {
                        errln!("sh: cd: {}: {}", dir, error);
                        1
                    }
                }
            }
            "pwd" => {
                ulib::outln!("{}", io::getcwd());
                0
            }
            "exit" => exit(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(self.status)),
            "status" => {
                ulib::outln!("{}", self.status);
                0
            }
            "export" | "unset" => {
                for arg in &args[1..] {
                    match arg.split_once('=') {
                        Some((key, value)) if args[0] == "export" => env::set(key, value),
                        None if args[0] == "unset" => env::unset(arg),
                        _ => {}
                    }
                }
                0
            }
            _ if words.len() == 1 && first.contains('=') && !first.starts_with('=') => {
                let (key, value) = first.split_once('=').expect("checked");
                env::set(key, value);
                0
            }
            _ => return None,
        })
    }
}

/// A word being read: its pieces so far.
#[derive(Default)]
struct Word {
    pieces: Vec<Piece>,
    text: String,
}

impl Word {
    fn push(&mut self, c: char) {
        self.text.push(c);
    }

    fn var(&mut self, name: String) {
        if !self.text.is_empty() {
            self.pieces.push(Piece::Text(core::mem::take(&mut self.text)));
        }
        self.pieces.push(Piece::Var(name));
    }

    fn finish(mut self) -> Vec<Piece> {
        if !self.text.is_empty() || self.pieces.is_empty() {
            self.pieces.push(Piece::Text(self.text));
        }
        self.pieces
    }
}

#[derive(Default)]
struct Command {
    words: Vec<String>,
    redirects: Vec<(Token, String)>,
}

/// Fork a child per command, wired by pipes; wait for them all. The
/// status is the last command's.
fn spawn_pipeline(commands: &[Command]) -> i32 {
    let mut pids = Vec::new();
    let mut previous_read: Option<i32> = None;
    for (i, command) in commands.iter().enumerate() {
        let last = i + 1 == commands.len();
        let pipe = if last {
            None
        } else {
            match io::pipe() {
                Ok(ends) => Some(ends),
                Err(error) => {
                    errln!("sh: pipe: {}", error);
                    break;
                }
            }
        };
        match fork() {
            Ok(0) => {
                if let Some(read) = previous_read {
                    let _ = io::dup2(read, 0);
                    let _ = io::close(read);
                }
                if let Some((read, write)) = pipe {
                    let _ = io::dup2(write, 1);
                    let _ = io::close(write);
                    let _ = io::close(read);
                }
                run_command(command)
            }
            Ok(pid) => pids.push(pid),
            Err(error) => errln!("sh: fork: {}", error),
        }
        if let Some(read) = previous_read.take() {
            let _ = io::close(read);
        }
        if let Some((read, write)) = pipe {
            let _ = io::close(write);
            previous_read = Some(read);
        }
    }
    if let Some(read) = previous_read {
        let _ = io::close(read);
    }
    let mut status = 1;
    for (i, pid) in pids.iter().enumerate() {
        let result = waitpid(Some(*pid), false);
        if i + 1 == pids.len() {
            status = match result {
                Ok(Some((_, WaitStatus::Exited(code)))) => code,
                Ok(Some((_, WaitStatus::Signaled(signal)))) => 128 + signal as i32,
                _ => 1,
            };
        }
    }
    status
}

/// In the child: redirect, then exec.
fn run_command(command: &Command) -> ! {
    for (kind, path) in &command.redirects {
        let (target, flags) = match kind {
            Token::In => (0, O_RDONLY),
            Token::Out => (1, O_WRONLY | O_CREAT | O_TRUNC),
            _ => (1, O_WRONLY | O_CREAT | O_APPEND),
        };
        match io::open(path, flags) {
            Ok(fd) => {
                let _ = io::dup2(fd, target);
                let _ = io::close(fd);
            }
            Err(error) => {
                errln!("sh: {}: {}", path, error);
                exit(1);
            }
        }
    }
    if command.words.is_empty() {
        exit(0);
    }
    let args: Vec<&str> = command.words.iter().map(String::as_str).collect();
    let error = exec(args[0], &args);
    let code = if error == Errno::ENOENT { 127 } else { 126 };
    errln!("sh: {}: {}", args[0], if error == Errno::ENOENT { "command not found" } else { error.name() });
    exit(code)
}

//! The Discord sink: a repo's team channel gets one message per env, edited to show the
//! env's latest state, and everything about the env goes into that message's thread, so the
//! channel stays readable. The (message, thread) pair is kept in the store, so it survives
//! restarts.

use std::sync::Arc;

use async_trait::async_trait;
use envmgr::store::Store;
use serenity::all::{
    ChannelId, CreateAttachment, CreateMessage, CreateThread, EditMessage, MessageId,
};
use serenity::http::Http;

use super::message::Notification;
use super::sink::{Sink, SinkError};

/// Discord's limit for one message.
const MESSAGE_LIMIT: usize = 2000;

pub struct DiscordSink {
    name: String,
    channel: ChannelId,
    http: Arc<Http>,
    store: Store,
}

impl DiscordSink {
    pub fn new(name: &str, channel: u64, http: Arc<Http>, store: Store) -> Self {
        Self {
            name: name.into(),
            channel: ChannelId::new(channel),
            http,
            store,
        }
    }

    fn key(&self, env: &str) -> String {
        format!("discord-thread:{}:{env}", self.channel)
    }

    /// The env's message in the channel and its thread, made on first use.
    async fn thread_for(&self, n: &Notification) -> Result<(MessageId, ChannelId), SinkError> {
        let key = self.key(&n.env);
        let stored = self
            .store
            .meta_get(&key)
            .await
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        if let Some((message, thread)) = stored.as_deref().and_then(|v| v.split_once(':')) {
            if let (Ok(message), Ok(thread)) = (message.parse::<u64>(), thread.parse::<u64>()) {
                return Ok((MessageId::new(message), ChannelId::new(thread)));
            }
        }
        let starter = self
            .channel
            .send_message(
                &self.http,
                CreateMessage::new().content(crate::discord::fit(&n.title)),
            )
            .await
            .map_err(discord_error)?;
        let name: String = n.env.chars().take(100).collect();
        let thread = self
            .channel
            .create_thread_from_message(&self.http, starter.id, CreateThread::new(name))
            .await
            .map_err(discord_error)?;
        self.store
            .meta_set(&key, &format!("{}:{}", starter.id, thread.id))
            .await
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        Ok((starter.id, thread.id))
    }
}

#[async_trait]
impl Sink for DiscordSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, n: &Notification) -> Result<(), SinkError> {
        let (starter, thread) = self.thread_for(n).await?;
        // The channel's one line per env shows where the env is now.
        self.channel
            .edit_message(
                &self.http,
                starter,
                EditMessage::new().content(crate::discord::fit(&n.title)),
            )
            .await
            .map_err(discord_error)?;
        let body = if n.text.is_empty() {
            n.title.clone()
        } else {
            format!("**{}**\n{}", n.title, n.text)
        };
        // The text (a snippet made for one message) is never cut: too long with the title,
        // the title goes first on its own.
        if body.chars().count() <= MESSAGE_LIMIT {
            thread
                .send_message(&self.http, CreateMessage::new().content(body))
                .await
                .map_err(discord_error)?;
        } else {
            thread
                .send_message(
                    &self.http,
                    CreateMessage::new().content(crate::discord::fit(&n.title)),
                )
                .await
                .map_err(discord_error)?;
            thread
                .send_message(
                    &self.http,
                    CreateMessage::new().content(crate::discord::fit(&n.text)),
                )
                .await
                .map_err(discord_error)?;
        }
        if let Some(chart) = self.chart(n).await {
            thread
                .send_message(&self.http, CreateMessage::new().add_file(chart))
                .await
                .map_err(discord_error)?;
        }
        Ok(())
    }
}

impl DiscordSink {
    /// A rollback alert's chart as an attachment. Drawn when sent (not kept in the outbox);
    /// if it cannot be drawn the alert still goes, with its link.
    async fn chart(&self, n: &Notification) -> Option<CreateAttachment> {
        let (Some(id), Some(_)) = (n.rollout_id, &n.chart_url) else {
            return None;
        };
        let rollout = match self.store.rollout(id).await {
            Ok(Some(rollout)) => rollout,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(rollout = id, error = %e, "cannot read the rollout to chart it");
                return None;
            }
        };
        match crate::rollout::chart::chart_png(&self.store, &rollout).await {
            Ok(png) => Some(CreateAttachment::bytes(png, format!("rollout-{id}.png"))),
            Err(e) => {
                tracing::warn!(rollout = id, error = %format!("{e:#}"), "cannot draw the rollout chart; the alert links it instead");
                None
            }
        }
    }
}

fn discord_error(e: serenity::Error) -> SinkError {
    match &e {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(response)) => {
            SinkError::Status {
                status: response.status_code.as_u16(),
                body: response.error.message.clone(),
            }
        }
        _ => SinkError::Transport(e.to_string()),
    }
}
